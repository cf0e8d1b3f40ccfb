import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_mtvib as tm
from tf_mtvib.data.pipeline import make_dataset

TASKS = tm.multi_digit_tasks()


def _dense_shapes(sequential):
    return [tuple(layer.kernel.shape) for layer in sequential.layers if isinstance(layer, keras.layers.Dense)]


def _flatten_size(encoder):
    return encoder.get_layer("flatten").output.shape[-1]


@pytest.mark.parametrize(
    "input_shape, flatten, kernel, strides",
    [((36, 36, 1), 3136, 3, 1), ((150, 150, 3), 4096, 5, 2)],
)
def test_architectures_match_tables_i_and_ii(input_shape, flatten, kernel, strides):
    tasks = TASKS if input_shape[0] == 36 else [tm.Task("head_pose", size=5), tm.Task("gender", size=2)]
    classes = [t.size for t in tasks]
    models = {s: tm.build_model(s, tasks, input_shape=input_shape, seed=0) for s in tm.SYSTEMS}
    # (a) STL: per task 3136 x 384, 384 x 192, 192 x classes.
    stl = models["stl"]
    for task, n in zip(tasks, classes):
        encoder = stl.encoder[task.name]
        conv = encoder.get_layer("conv1")
        assert (conv.kernel_size, conv.strides, conv.padding) == ((kernel, kernel), (strides, strides), "valid")
        assert _flatten_size(encoder) == flatten
        assert _dense_shapes(encoder) == [(flatten, 384), (384, 192)]
        assert _dense_shapes(stl.decoders[task.name]) == [(192, n)]
    # (b) GS / UWL: shared 3136 x 384, per task 384 x 192, 192 x classes.
    for system in ("gs", "uwl"):
        model = models[system]
        assert _dense_shapes(model.encoder) == [(flatten, 384)]
        for task, n in zip(tasks, classes):
            assert _dense_shapes(model.decoders[task.name]) == [(384, 192), (192, n)]
    # (c) / (d): 3136 x 1024 x 1024 x 1024, bottleneck 1024 -> 256 (mu, scale),
    # decoders 256 x 384 x 192 x classes.
    for system in ("stvib", "mtvib"):
        model = models[system]
        for task, n in zip(tasks, classes):
            encoder = model._branch(model.encoder, task.name)
            bottleneck = model._branch(model.bottleneck, task.name)
            assert _dense_shapes(encoder) == [(flatten, 1024), (1024, 1024), (1024, 1024)]
            assert tuple(bottleneck.loc_dense.kernel.shape) == (1024, 256)
            assert tuple(bottleneck.scale_dense.kernel.shape) == (1024, 256)
            assert _dense_shapes(model.decoders[task.name]) == [(256, 384), (384, 192), (192, n)]
    # Sharing: one encoder for GS / UWL / MTVIB, one per task for STL / STVIB.
    assert isinstance(models["stl"].encoder, dict) and isinstance(models["stvib"].bottleneck, dict)
    assert not isinstance(models["mtvib"].encoder, dict)
    assert isinstance(models["uwl"].weighting, tm.UncertaintyWeighting)
    assert isinstance(models["gs"].weighting, tm.FixedWeighting)


@pytest.mark.slow
@pytest.mark.parametrize("system", tm.SYSTEMS)
def test_save_load_and_config_round_trip_keep_predictions(system, tmp_path, sample_data):
    model = tm.build_model(system, TASKS, task_weights=[0.3, 0.7] if system == "gs" else None, seed=1)
    model.compile(keras.optimizers.Adam(1e-3))
    x, y = sample_data.x_train[:8], {k: v[:8] for k, v in sample_data.y_train.items()}
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)  # moves BN statistics and weights
    expected = model.predict(x, verbose=0)

    path = tmp_path / f"{system}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    got = loaded.predict(x, verbose=0)
    for name in expected:
        np.testing.assert_allclose(got[name], expected[name], atol=1e-5)
    assert loaded.optimizer is not None and loaded.optimizer.iterations.numpy() == 2
    loaded.fit(x, y, batch_size=4, epochs=1, verbose=0)  # trains on after loading

    clone = tm.MultiTaskVIB.from_config(model.get_config())
    clone.build((None, 36, 36, 1))
    clone.set_weights(model.get_weights())
    got = clone(x, training=False)
    for name in expected:
        np.testing.assert_allclose(got[name].numpy(), expected[name], atol=1e-5)


def test_mc_prediction_averages_softmax_over_latent_samples(sample_data):
    model = tm.build_mtvib(TASKS, num_samples=64, seed=5)
    x = sample_data.x_test[:4]
    # Widen the posterior so that samples differ visibly from the mean code.
    model.bottleneck.scale_dense.bias.assign(np.full(256, 6.0, "float32"))
    mc = model(x, training=False)
    probabilities = tf.nn.softmax(mc["top_left"]).numpy()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)
    features = model.encode(x, training=False)
    codes = model.bottleneck.sample(features, 4000)
    logits = model.decoders["top_left"](tf.reshape(codes, (-1, 256)), training=False)
    reference = tf.reduce_mean(tf.nn.softmax(tf.reshape(logits, (4000, 4, 10))), axis=0).numpy()
    np.testing.assert_allclose(probabilities, reference, atol=0.05)
    model.bottleneck.num_samples = 1
    deterministic = tf.nn.softmax(model(x, training=False)["top_left"]).numpy()
    assert np.abs(deterministic - reference).max() > np.abs(probabilities - reference).max()


def test_metrics_reported_and_log_variances_move(sample_data):
    model = tm.build_mtvib(TASKS, seed=2)
    model.compile(keras.optimizers.Adam(1e-2))
    data = make_dataset(sample_data.x_train[:64], {k: v[:64] for k, v in sample_data.y_train.items()}, 16)
    before = model.weighting.log_variances.numpy().copy()
    history = model.fit(data, epochs=1, verbose=0).history
    for key in ("loss", "top_left_loss", "bottom_right_accuracy", "joint_accuracy", "top_left_sigma", "bottleneck_kl"):
        assert key in history, sorted(history)
    assert np.abs(model.weighting.log_variances.numpy() - before).min() > 1e-3
    assert history["top_left_sigma"][0] != 1.0


def test_regression_task_as_auxiliary_reconstruction(sample_data):
    tasks = [tm.Task("top_left", size=10), tm.Task("reconstruction", kind="regression", size=(36, 36, 1))]
    model = tm.build_mtvib(tasks, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    x = sample_data.x_train[:16]
    y = {"top_left": sample_data.y_train["top_left"][:16], "reconstruction": x}
    history = model.fit(x, y, batch_size=8, epochs=2, verbose=0).history
    assert model.predict(x[:2], verbose=0)["reconstruction"].shape == (2, 36, 36, 1)
    assert history["reconstruction_loss"][-1] < history["reconstruction_loss"][0]


def test_bad_input_is_rejected_before_any_training_step(sample_data):
    model = tm.build_mtvib(TASKS, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    x = sample_data.x_train[:8]
    y = {k: v[:8] for k, v in sample_data.y_train.items()}
    weights = [w.copy() for w in model.get_weights()]
    bad_x = x.copy()
    bad_x[0, 0, 0, 0] = np.nan
    cases = [
        ((x[..., 0], y), r"shape \(n, 36, 36, 1\)"),
        ((bad_x, y), "NaN or Inf"),
        ((x.astype(str), y), "numbers"),
        ((x, {**y, "top_left": y["top_left"] + 10}), r"\[0, 9\]"),
        ((x, {**y, "middle": y["top_left"]}), "unknown task"),
        ((x, {"top_left": y["top_left"]}), "missing for task"),
        ((x[:0], {k: v[:0] for k, v in y.items()}), "empty"),
    ]
    for (bad, labels), message in cases:
        with pytest.raises(ValueError, match=message):
            model.fit(bad, labels, epochs=1, verbose=0)
    for before, after in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(before, after)
    with pytest.raises(ValueError, match="compile"):
        model.compile("adam", loss="mse")
    with pytest.raises(ValueError, match="system"):
        tm.build_model("vae", TASKS)


@pytest.mark.slow
def test_mtvib_one_epoch_on_embedded_sample_beats_chance(sample_data):
    keras.utils.set_random_seed(0)
    model = tm.build_mtvib(sample_data.tasks, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(make_dataset(sample_data.x_train, sample_data.y_train, 50, shuffle=True, seed=0), epochs=1, verbose=0)
    accuracy = tm.evaluation.task_accuracies(model, sample_data.x_test, sample_data.y_test)
    # Measured 71.6 % / 66.6 % (joint 48.1 %) on this machine; chance is 10 % / 1 %.
    assert accuracy["top_left"] > 0.45 and accuracy["bottom_right"] > 0.45, accuracy
    assert accuracy["joint"] > 0.2, accuracy


def test_posterior_is_each_tasks_own_q_z_given_x():
    # STVIB has one bottleneck per task: export's `encode` signature and users
    # read each task's q(z|x) through `posterior`, not the model's internals.
    model = tm.build_model("stvib", TASKS, input_shape=(36, 36, 1), latent_dim=8, seed=0)
    x = np.random.default_rng(0).uniform(size=(3, 36, 36, 1)).astype("float32")
    assert not model.shared_bottleneck and model.task_indexed is False
    for task in model.task_names:
        loc, scale = model.posterior(x, task)
        features = model.encoder[task](x, training=False)
        expected_loc, expected_scale = model.bottleneck[task].posterior_params(features)
        np.testing.assert_allclose(loc, expected_loc, atol=1e-6)
        np.testing.assert_allclose(scale, expected_scale, atol=1e-6)
    first, second = (model.posterior(x, t)[0].numpy() for t in model.task_names[:2])
    assert np.abs(first - second).max() > 1e-3
    with pytest.raises(ValueError, match="task_name"):
        model.posterior(x, "no_such_task")


def test_kl_annealing_ramps_each_bottlenecks_beta_and_the_loss_follows_it(sample_data):
    from tf_mtvib.training import KLAnnealing

    # STVIB: two bottlenecks, each with its own beta variable.
    model = tm.build_model("stvib", TASKS, input_shape=(36, 36, 1), latent_dim=8, beta=0.2, seed=0)
    model.compile(keras.optimizers.SGD(1e-3))
    x, y = sample_data.x_train[:8], {k: v[:8] for k, v in sample_data.y_train.items()}
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[KLAnnealing(warmup_steps=4)])
    # Set before steps 0 and 1: 0.2 * 0/4, then 0.2 * 1/4.
    for variable, full_value in model.kl_weights():
        assert full_value == pytest.approx(0.2)
        assert float(variable.numpy()) == pytest.approx(0.05)

    for bottleneck in model.bottlenecks:
        bottleneck.kl_weight.assign(0.3)
    model(x, training=False)
    expected = sum(0.3 * float(b.latest_kl) for b in model.bottlenecks)
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)
    assert expected > 0

    gs = tm.build_model("gs", TASKS, input_shape=(36, 36, 1), latent_dim=8, seed=0)
    gs.compile(keras.optimizers.SGD(1e-3))
    with pytest.raises(ValueError, match="needs a model with a KL term"):
        gs.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[KLAnnealing(warmup_steps=4)])
