"""Issue 11: no silent wrong answers, errors that name the file, a diverged run
never passes for a model. One test (or parametrized family) per item."""

import functools
import json
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_mtvib as tm
from tf_mtvib import cli
from tf_mtvib.attacks import adversarial_accuracy, fast_gradient_method, task_indexed_sweep, vulnerability
from tf_mtvib.data import atomic
from tf_mtvib.evaluation import domain_accuracies, task_accuracies

SMALL = ["--num-train", "100", "--num-test", "50", "--batch-size", "50", "--latent-dim", "16", "--verbose", "0"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished one-epoch CLI run on the embedded sample."""
    run = tmp_path_factory.mktemp("hardening") / "run"
    assert cli.main(["train", "--epochs", "1", "--lr", "1e-3", "--out", str(run), *SMALL]) == 0
    return run


@pytest.fixture(scope="module")
def small_mtvib(sample_data):
    keras.utils.set_random_seed(0)
    return tm.build_mtvib(sample_data.tasks, latent_dim=4, seed=0)


def _tiny_mtvib(tasks, beta=1e-3):
    """A MultiTaskVIB small enough to fit in a second: flatten, 8 units, d = 4."""
    from tf_mtvib.layers import GaussianBottleneck, UncertaintyWeighting

    encoder = keras.Sequential([keras.layers.Flatten(), keras.layers.Dense(8, activation="relu")])
    model = tm.MultiTaskVIB(
        tasks, encoder, {t.name: keras.layers.Dense(t.size) for t in tasks},
        bottleneck=GaussianBottleneck(4, beta=beta, seed=0, name="bottleneck"),
        weighting=UncertaintyWeighting([t.kind for t in tasks]), input_shape=(36, 36, 1),
    )
    model.build((None, 36, 36, 1))
    model.compile(keras.optimizers.Adam(1e-3))
    return model


def _copy_run(run_dir, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    return copy


def _truncate(path, keep=200):
    data = path.read_bytes()
    path.write_bytes(data[:keep])


def _fails_cleanly(argv, capsys, *fragments):
    """Runs the CLI in-process; asserts exit status 2 and a one-line
    `tf-mtvib: ...` message on stderr that holds every fragment, no traceback."""
    capsys.readouterr()
    code = cli.main(argv)
    message = capsys.readouterr().err
    assert code == 2, (code, message)
    assert message.startswith("tf-mtvib:") and "Traceback" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# --- 1. a diverged run stops, names where, keeps the last good checkpoint --------


@pytest.mark.slow
def test_diverged_cli_run_exits_nonzero_and_writes_no_model(tmp_path, capsys):
    run = tmp_path / "diverged"
    message = _fails_cleanly(
        ["train", "--epochs", "2", "--lr", "1e6", "--out", str(run), *SMALL], capsys, "diverged", "epoch 1", "1e+06"
    )
    assert "no checkpoint" in message
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()


def test_divergence_stops_at_its_step_and_keeps_the_last_good_checkpoint(sample_data, small_mtvib, tmp_path):
    from tf_mtvib.training.callbacks import EpochCheckpoint, StopOnNonFiniteLoss, TrainingDiverged

    model = _tiny_mtvib(sample_data.tasks)

    class PoisonSecondEpoch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                kernel = self.model.decoders["top_left"].kernel
                kernel.assign(np.full(kernel.shape, np.nan, "float32"))

    x, y = sample_data.x_train[:20], {k: v[:20] for k, v in sample_data.y_train.items()}
    with pytest.raises(TrainingDiverged, match="epoch 2, step 1") as caught:
        model.fit(x, y, batch_size=10, epochs=2, verbose=0,
                  callbacks=[PoisonSecondEpoch(), StopOnNonFiniteLoss(), EpochCheckpoint(str(tmp_path))])
    assert (caught.value.epoch, caught.value.step) == (2, 1)
    restored, state = EpochCheckpoint.restore(str(tmp_path))
    assert state["epoch"] == 1
    assert all(np.all(np.isfinite(w.numpy())) for w in restored.weights)


@pytest.mark.slow
def test_nan_weights_are_refused_and_metrics_json_stays_valid(run_dir, tmp_path, capsys):
    run = _copy_run(run_dir, tmp_path)
    model = keras.models.load_model(run / "model.keras")
    kernel = model.decoders["top_left"].weights[0]
    kernel.assign(np.full(kernel.shape, np.nan, "float32"))
    model.save(run / "model.keras")
    for argv in (["evaluate", str(run)], ["attack", str(run), "--num-test", "10"],
                 ["export", str(run), "--out", str(tmp_path / "export")]):
        _fails_cleanly(argv, capsys, str(run / "model.keras"), "non-finite")
    assert not (tmp_path / "export").exists() and not list(run.glob("eval-*.json"))

    atomic.write_json(tmp_path / "m.json", {"history": {"loss": [1.5, float("nan"), float("inf")]}})
    assert json.loads((tmp_path / "m.json").read_text()) == {"history": {"loss": [1.5, None, None]}}


# --- 2. one data check for every entry point ------------------------------------

BAD_DATA = {
    "nan image": (lambda x, y: (np.where(np.arange(x.size).reshape(x.shape) == 7, np.nan, x), y), "NaN or Inf"),
    "label 10": (lambda x, y: (x, {**y, "top_left": np.full_like(y["top_left"], 10)}), "must lie in [0, 9]"),
    "label -1": (lambda x, y: (x, {**y, "bottom_right": np.full_like(y["bottom_right"], -1)}), "must lie in [0, 9]"),
    "missing task": (lambda x, y: (x, {"top_left": y["top_left"]}), "missing for task(s) ['bottom_right']"),
    "lengths differ": (lambda x, y: (x, {k: v[:-1] for k, v in y.items()}), "label(s) for 8 example(s)"),
    "empty": (lambda x, y: (x[:0], {k: v[:0] for k, v in y.items()}), "empty"),
    "28x28 image": (lambda x, y: (x[:, :28, :28], y), "must have shape (n, 36, 36, 1)"),
}


@pytest.mark.parametrize("case", sorted(BAD_DATA))
def test_every_entry_point_rejects_bad_data_with_one_message(sample_data, small_mtvib, case):
    corrupt, message = BAD_DATA[case]
    x, y = corrupt(sample_data.x_test[:8], {k: v[:8] for k, v in sample_data.y_test.items()})
    entry_points = {
        "task_accuracies": lambda: task_accuracies(small_mtvib, x, y),
        "adversarial_accuracy": lambda: adversarial_accuracy(small_mtvib, x, y, eps=0.1),
        "fast_gradient_method": lambda: fast_gradient_method(small_mtvib, x, y=y, eps=0.1, clip_min=0.0, clip_max=1.0),
        "vulnerability": lambda: vulnerability(small_mtvib, x, y, [["top_left"]]),
    }
    if case not in ("label 10", "label -1", "missing task", "lengths differ"):
        entry_points["predict"] = lambda: small_mtvib.predict(x, verbose=0)
    for name, call in entry_points.items():
        if name in ("fast_gradient_method", "vulnerability") and case == "missing task":
            continue  # an attack may name only the tasks it attacks
        with pytest.raises(ValueError) as caught:
            call()
        assert message in str(caught.value), (name, str(caught.value))


def test_predict_reads_a_dataset_of_images_alone_and_fit_still_needs_labels(sample_data, small_mtvib):
    x = sample_data.x_test[:12]
    images = tf.data.Dataset.from_tensor_slices(x).batch(5)
    from_dataset, from_array = small_mtvib.predict(images, verbose=0), small_mtvib.predict(x, verbose=0)
    for task in ("top_left", "bottom_right"):
        np.testing.assert_allclose(from_dataset[task], from_array[task], atol=1e-5)
    with pytest.raises(ValueError, match="must yield \\(x, labels\\)"):
        small_mtvib.fit(images, verbose=0)
    wrong_shape = tf.data.Dataset.from_tensor_slices(x[:, :30]).batch(5)
    with pytest.raises(ValueError, match="images of shape"):
        small_mtvib.predict(wrong_shape, verbose=0)


def _spy_on_keras(monkeypatch, handed):
    """Replaces keras.Model's predict / evaluate / fit by wrappers that record
    in `handed` the data the package passes on; returns the originals."""
    originals = {name: getattr(keras.Model, name) for name in ("predict", "evaluate", "fit")}
    for name, original in originals.items():
        @functools.wraps(original)  # keeps Keras' signature, which the package's fit binds to
        def spy(self, *args, _name=name, _original=original, **kwargs):
            handed[_name] = kwargs.get("validation_data") if _name == "fit" else (args[0] if args else kwargs["x"])
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(keras.Model, name, spy)
    return originals


def test_arrays_reach_keras_as_batches_without_autotuning_and_sample_weights_count(sample_data, monkeypatch):
    from tf_mtvib.data.pipeline import make_dataset

    model = _tiny_mtvib(sample_data.tasks)
    model.compile(keras.optimizers.Adam(1e-2))
    x, y = sample_data.x_test[:13], {k: v[:13] for k, v in sample_data.y_test.items()}
    handed = {}
    keras_own = _spy_on_keras(monkeypatch, handed)
    ours = model.predict(x, batch_size=5, verbose=0)
    assert isinstance(handed["predict"], tf.data.Dataset) and handed["predict"].options().autotune.enabled is False
    keras_path = keras_own["predict"](model, x, batch_size=5, verbose=0)
    for task in ours:
        np.testing.assert_allclose(ours[task], keras_path[task], atol=1e-6)

    # Weights 0 on the first 7 examples: every task's weighted loss and accuracy, and the joint accuracy,
    # are those of the other 6, also when the batches (of 5) mix weighted and unweighted examples.
    weights = (np.arange(13) >= 7).astype("float32")
    weighted = model.evaluate(x, y, sample_weight=weights, batch_size=5, verbose=0, return_dict=True)
    assert handed["evaluate"].options().autotune.enabled is False
    through_keras = keras_own["evaluate"](model, x, y, sample_weight=weights, batch_size=5, verbose=0,
                                          return_dict=True)
    last_six = model.evaluate(x[7:], {k: v[7:] for k, v in y.items()}, batch_size=5, verbose=0, return_dict=True)
    metrics = [f"{t}_{m}" for t in ("top_left", "bottom_right") for m in ("loss", "accuracy")] + ["joint_accuracy"]
    for metric in metrics:
        assert weighted[metric] == pytest.approx(last_six[metric], rel=1e-5), metric
        assert through_keras[metric] == pytest.approx(last_six[metric], rel=1e-5), metric
    with pytest.raises(ValueError, match=r"sample_weight \[12\]"):
        model.evaluate(x, y, sample_weight=weights[:12], verbose=0)

    history = model.fit(sample_data.x_train[:40], {k: v[:40] for k, v in sample_data.y_train.items()}, 20, 1, 0,
                        validation_data=(x, y), validation_batch_size=4)
    validation = handed["fit"]
    assert isinstance(validation, tf.data.Dataset) and validation.options().autotune.enabled is False
    assert next(iter(validation))[0].shape[0] == 4  # validation_batch_size, with batch_size given by position
    after = keras_own["evaluate"](model, x, y, batch_size=4, verbose=0, return_dict=True)
    assert history.history["val_top_left_loss"][0] == pytest.approx(after["top_left_loss"], rel=1e-5)
    assert make_dataset(x, y, 5).options().autotune.enabled is False


def test_multi_domain_entry_points_check_tasks_labels_and_images():
    from tf_mtvib.data.domains import DomainData
    from tf_mtvib.models.vmtl import build_vmtl_system

    model = build_vmtl_system("bmtl", 2, 3, (5,), task_names=["a", "b"])
    rng = np.random.default_rng(0)
    x, task, labels = rng.uniform(size=(6, 5)).astype("float32"), np.array([0, 1] * 3), np.array([0, 1, 2] * 2)
    bad = {
        "task 2 of 2 tasks": ((x, np.array([0, 2] * 3), labels), "x['task'] labels must lie in [0, 1]"),
        "label 3 of 3 classes": ((x, task, np.array([0, 3] * 3)), "`y` labels must lie in [0, 2]"),
        "nan image": ((np.where(x > 0.9, np.nan, x), task, labels), "NaN or Inf"),
    }
    for (images, tasks, ys), message in bad.values():
        data = DomainData(["a", "b"], images, tasks, ys, images, tasks, ys, num_classes=3)
        for call in (lambda: domain_accuracies(model, data),
                     lambda: task_indexed_sweep(model, images, tasks, ys, eps_values=[0.1])):
            with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("]", r"\]")):
                call()
    with pytest.raises(ValueError, match="NaN or Inf"):
        model.predict({"images": bad["nan image"][0][0], "task": task}, verbose=0)


# --- 3. inputs outside the model's declared range ---------------------------------


def test_images_in_0_255_are_rejected_by_fit_evaluate_predict_and_attacks(sample_data, small_mtvib, tmp_path):
    x = (sample_data.x_test[:8] * 255).round()
    y = {k: v[:8] for k, v in sample_data.y_test.items()}
    small_mtvib.compile(keras.optimizers.Adam(1e-3))
    for images in (x, x.astype(np.uint8)):
        for call in (lambda: small_mtvib.fit(images, y, verbose=0), lambda: small_mtvib.evaluate(images, y, verbose=0),
                     lambda: small_mtvib.predict(images, verbose=0), lambda: task_accuracies(small_mtvib, images, y)):
            with pytest.raises(ValueError, match=r"values in \[0, 255\].*inputs in \[0, 1\].*divided by 255"):
                call()
    with pytest.raises(ValueError, match="NaN or Inf"):
        fast_gradient_method(lambda v: small_mtvib(v), np.full((2, 36, 36, 1), np.nan, "float32"), eps=0.1)

    # The range is stored with the model and recorded by exports.
    wide = tm.build_gs(sample_data.tasks, seed=0)
    config = wide.get_config()
    config["input_range"] = [-1.0, 1.0]
    wide = type(wide).from_config(config)
    wide.build((None, 36, 36, 1))
    wide.save(tmp_path / "wide.keras")
    assert keras.models.load_model(tmp_path / "wide.keras").input_range == (-1.0, 1.0)
    assert wide.predict(sample_data.x_test[:2] * 2 - 1, verbose=0)["top_left"].shape == (2, 10)
    from tf_mtvib.export import export_savedmodel, read_metadata

    assert read_metadata(export_savedmodel(wide, str(tmp_path / "export")))["value_range"] == [-1.0, 1.0]


def test_vmtl_family_image_models_reject_0_255_images_and_feature_models_take_any_scale(tmp_path):
    from tf_mtvib.data.domains import DomainData
    from tf_mtvib.models.vmtl import build_vmtl_system

    rng = np.random.default_rng(0)
    images = rng.uniform(size=(4, 28, 28, 1)).astype("float32")
    task, labels = np.array([0, 1, 0, 1]), np.array([0, 1, 2, 0])
    for system in ("bmtl", "vmtl"):
        model = build_vmtl_system(system, 2, 3, (28, 28, 1), latent_dim=8, seed=0)
        assert model.input_range == (0.0, 1.0)
        model.compile(keras.optimizers.Adam(1e-3))
        wide = {"images": images * 255, "task": task}
        data = DomainData(["a", "b"], wide["images"], task, labels, wide["images"], task, labels, num_classes=3)
        for call in (lambda: model.fit(wide, labels, verbose=0), lambda: model.evaluate(wide, labels, verbose=0),
                     lambda: model.predict(wide, verbose=0), lambda: domain_accuracies(model, data),
                     lambda: task_indexed_sweep(model, wide["images"], task, labels, eps_values=[0.1])):
            with pytest.raises(ValueError, match=r"values in \[0\.\d+, 254\.\d+\].*inputs in \[0, 1\].*divided by 255"):
                call()
        assert model.predict({"images": images, "task": task}, verbose=0).shape == (4, 3)
    model.save(tmp_path / "vmtl.keras")
    assert keras.models.load_model(tmp_path / "vmtl.keras").input_range == (0.0, 1.0)
    features = build_vmtl_system("bmtl", 2, 3, (5,))
    assert features.input_range is None
    with pytest.raises(ValueError, match=r"`input_range` must be \(min, max\) with min < max, received input_range"):
        build_vmtl_system("bmtl", 2, 3, (5,), input_range=(1.0, 0.0))
    assert features.predict({"images": 40 * rng.normal(size=(4, 5)).astype("float32"), "task": task},
                            verbose=0).shape == (4, 3)


# --- 4. damaged files are named -------------------------------------------------


@pytest.mark.parametrize("command", ["evaluate", "export", "attack", "robustness"])
def test_truncated_run_model_is_named_as_damaged(run_dir, tmp_path, capsys, command):
    run = _copy_run(run_dir, tmp_path)
    _truncate(run / "model.keras")
    extra = ["--out", str(tmp_path / "export")] if command in ("export", "robustness") else []
    _fails_cleanly([command, str(run), *extra], capsys, str(run / "model.keras"), "damaged", "--overwrite")
    assert not (tmp_path / "export").exists() and not (run / "robustness").exists()


@pytest.mark.parametrize("damaged", ["checkpoint/model.keras", "checkpoint/state.json", "config.json"])
def test_truncated_checkpoint_or_config_is_named_on_resume(run_dir, tmp_path, capsys, damaged):
    run = _copy_run(run_dir, tmp_path)
    os.remove(run / "model.keras")  # an interrupted run
    os.remove(run / "metrics.json")
    _truncate(run / damaged, keep=10)
    _fails_cleanly(["train", "--epochs", "2", "--lr", "1e-3", "--out", str(run), *SMALL], capsys,
                   str(run / damaged), "damaged", "--overwrite")
    assert not (run / "model.keras").exists() and not (run / "metrics.json").exists()


def test_truncated_config_is_named_by_evaluate(run_dir, tmp_path, capsys):
    run = _copy_run(run_dir, tmp_path)
    _truncate(run / "config.json", keep=10)
    _fails_cleanly(["evaluate", str(run)], capsys, str(run / "config.json"), "damaged")


def test_truncated_cache_is_regenerated(data_dir, tmp_path):
    from tf_mtvib.data.multimnist import load_multi

    first, _ = load_multi("multimnist", data_dir, str(tmp_path), num_train=30, num_test=20)
    (cache,) = tmp_path.glob("*.npz")
    _truncate(cache)
    with pytest.warns(UserWarning, match=f"{cache}.*damaged"):
        again, _ = load_multi("multimnist", data_dir, str(tmp_path), num_train=30, num_test=20)
    np.testing.assert_array_equal(again["train"][0], first["train"][0])
    positional, _ = load_multi("multimnist", data_dir, str(tmp_path), 30, 20)
    np.testing.assert_array_equal(positional["test"][1], first["test"][1])


# --- 5. flags that do nothing, foreign models -----------------------------------


@pytest.mark.parametrize("flags", [
    ["--adv-fraction", "0.3"], ["--adv-eps", "0.2"], ["--adv-tasks", "top_left"],
    ["--adversarial", "pgd", "--model", "vmtl", "--dataset", "domains"],  # VMTL training has no attack step
])
def test_flags_that_would_do_nothing_are_refused(tmp_path, capsys, flags):
    run = tmp_path / "run"
    _fails_cleanly(["train", *flags, "--out", str(run), *SMALL], capsys, flags[0], "--adversarial")
    assert not run.exists()


def test_models_tf_mtvib_did_not_build_are_refused(run_dir, tmp_path, capsys):
    run = _copy_run(run_dir, tmp_path)
    plain = keras.Sequential([keras.Input((36, 36, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    plain.save(run / "model.keras")
    _fails_cleanly(["evaluate", str(run)], capsys, str(run / "model.keras"), "not one that tf-mtvib built")

    def double(x):
        return x * 2

    lambda_model = keras.Sequential([keras.Input((36, 36, 1)), keras.layers.Lambda(double), keras.layers.Flatten()])
    lambda_model.save(run / "model.keras")
    _fails_cleanly(["export", str(run), "--out", str(tmp_path / "export")], capsys, str(run / "model.keras"),
                   "safe mode")
    assert not (tmp_path / "export").exists()


# --- 6. the validation KL is reported -------------------------------------------


def test_val_bottleneck_kl_is_the_kl_inside_val_loss(sample_data):
    keras.utils.set_random_seed(0)
    model = _tiny_mtvib(sample_data.tasks, beta=0.5)
    x, y = sample_data.x_train[:20], {k: v[:20] for k, v in sample_data.y_train.items()}
    x_val, y_val = sample_data.x_test[:10], {k: v[:10] for k, v in sample_data.y_test.items()}
    history = model.fit(x, y, batch_size=10, epochs=1, validation_data=(x_val, y_val), validation_batch_size=10,
                        verbose=0).history
    loc, scale = model.bottleneck.posterior_params(model.encode(x_val, training=False))
    kl = float(np.mean(model.bottleneck.kl_divergence(loc, scale)))
    assert kl > 0.1
    np.testing.assert_allclose(history["val_bottleneck_kl"][0], kl, rtol=1e-4)
    # The logged parts add up: weighted task losses + beta * KL = val_loss.
    s = model.weighting.log_variances.numpy()
    task_terms = sum(np.exp(-s_k) * history[f"val_{t}_loss"][0] + s_k / 2 for s_k, t in zip(s, model.task_names))
    np.testing.assert_allclose(history["val_loss"][0], task_terms + 0.5 * kl, rtol=1e-4)
