import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from tf_mtvib import attacks
from tf_mtvib.export import export_savedmodel, read_metadata

# Runs in a fresh interpreter: TensorFlow only, and it checks that.
SERVE_SCRIPT = """
import json, sys
import numpy as np
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
images = tf.constant(np.load(sys.argv[2]))
outputs = {"serve": loaded.signatures["serving_default"](images=images),
           "mc": loaded.signatures["predict_mc"](images=images),
           "encode": loaded.signatures["encode"](images=images)}
np.savez(sys.argv[3], **{f"{s}/{k}": v.numpy() for s, out in outputs.items() for k, v in out.items()})
metadata = json.loads(loaded.signatures["metadata"]()["json"].numpy())
print(json.dumps({"metadata": metadata, "tf_mtvib_imported": any(m.startswith("tf_mtvib") for m in sys.modules)}))
"""


@pytest.fixture(scope="module")
def exported(trained_mtvib, tmp_path_factory):
    model, x, y = trained_mtvib
    base = tmp_path_factory.mktemp("savedmodels") / "mtvib"
    path = export_savedmodel(model, str(base), mc_samples=64)
    return model, x, y, pathlib.Path(path)


def test_fresh_process_without_tf_mtvib_serves_the_keras_predictions(exported, tmp_path):
    model, x, _, path = exported
    np.save(tmp_path / "x.npy", x[:32])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", SERVE_SCRIPT, str(path), str(tmp_path / "x.npy"), str(tmp_path / "out.npz")],
        capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["tf_mtvib_imported"] is False
    assert report["metadata"]["input_shape"] == [36, 36, 1]
    assert [t["name"] for t in report["metadata"]["tasks"]] == model.task_names
    assert report["metadata"]["value_range"] == [0.0, 1.0] and report["metadata"]["mc_samples"] == 64

    served = np.load(tmp_path / "out.npz")
    keras_logits = model(x[:32], training=False)
    for task in model.task_names:
        probabilities = tf.nn.softmax(keras_logits[task]).numpy()
        np.testing.assert_allclose(served[f"serve/{task}_probabilities"], probabilities, atol=1e-5)
        np.testing.assert_array_equal(served[f"serve/{task}_class"], probabilities.argmax(-1))
        # The MC signature averages 64 latent samples; so does the Keras side here.
        keras_mc = np.exp(model(x[:32], training=False, latent_samples=64)[task].numpy())
        mc = served[f"mc/{task}_probabilities"]
        np.testing.assert_allclose(mc.sum(-1), 1.0, atol=1e-5)
        # Two independent 64-sample estimates: close on average (about 0.003 here), while the
        # largest of 320 differences can reach 0.06 with some random states.
        difference = np.abs(mc - keras_mc)
        assert difference.mean() < 0.01 and difference.max() < 0.15, (difference.mean(), difference.max())
        entropy = -(mc * np.log(np.maximum(mc, 1e-30))).sum(-1)
        np.testing.assert_allclose(served[f"mc/{task}_entropy"], entropy, rtol=1e-4, atol=1e-5)
        assert np.all((entropy >= 0) & (entropy <= np.log(10) + 1e-5))
    loc, scale = model.bottleneck.posterior_params(model.encode(x[:32], training=False))
    np.testing.assert_allclose(served["encode/latent_mean"], loc.numpy(), atol=1e-5)
    np.testing.assert_allclose(served["encode/latent_scale"], scale.numpy(), rtol=1e-5)


@pytest.mark.slow
def test_saved_model_cli_lists_the_signatures_and_runs_serving_default(exported, tmp_path):
    _, x, _, path = exported
    cli = pathlib.Path(sys.executable).with_name("saved_model_cli")
    shown = subprocess.run([str(cli), "show", "--dir", str(path), "--all"], capture_output=True, text=True, timeout=300)
    assert shown.returncode == 0, shown.stderr[-2000:]
    for signature in ("serving_default", "predict_mc", "encode", "metadata"):
        assert f"signature_def['{signature}']" in shown.stdout
    assert "top_left_probabilities" in shown.stdout and "images" in shown.stdout
    np.save(tmp_path / "x.npy", x[:3])
    ran = subprocess.run(
        [str(cli), "run", "--dir", str(path), "--tag_set", "serve", "--signature_def", "serving_default",
         "--inputs", f"images={tmp_path / 'x.npy'}", "--outdir", str(tmp_path / "run_out")],
        capture_output=True, text=True, timeout=300,
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    classes = np.load(tmp_path / "run_out" / "top_left_class.npy")
    assert classes.shape == (3,) and classes.dtype == np.int64


def test_attack_on_the_loaded_export_matches_the_keras_attack(exported):
    model, x, y, path = exported
    x, y = x[:100], {k: v[:100] for k, v in y.items()}
    loaded = tf.saved_model.load(str(path))  # must outlive the signature, which holds no variables
    signature = loaded.signatures["serving_default"]

    def served(images):
        out = signature(images=images)
        return {task: out[f"{task}_logits"] for task in model.task_names}

    keras_accuracy = attacks.adversarial_accuracy(model, x, y, "fgsm", eps=0.1)
    from_keras = attacks.fast_gradient_method(model, x, y=y, eps=0.1, clip_min=0.0, clip_max=1.0).numpy()
    from_served = attacks.fast_gradient_method(served, x, y=y, eps=0.1, clip_min=0.0, clip_max=1.0).numpy()
    # Signs of gradients that are zero up to rounding may differ; nothing else.
    assert np.mean(np.isclose(from_keras, from_served, atol=1e-6)) > 0.99
    for task in model.task_names:
        served_accuracy = np.mean(np.argmax(served(tf.constant(from_served))[task], -1) == y[task])
        assert abs(served_accuracy - keras_accuracy[task]) <= 0.02
    assert keras_accuracy["joint"] < attacks.adversarial_accuracy(model, x, y, "fgsm", eps=0.0)["joint"]


def test_versions_count_up_and_a_failed_export_keeps_the_previous_version(exported, tmp_path, monkeypatch):
    model, _, _, _ = exported
    base = tmp_path / "base"
    first = export_savedmodel(model, str(base), mc_samples=2)
    assert os.path.basename(first) == "1" and read_metadata(first)["version"] == 1
    with pytest.raises(FileExistsError, match="overwrite"):
        export_savedmodel(model, str(base), version=1)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(tf.saved_model, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        export_savedmodel(model, str(base), version=1, overwrite=True)
    with pytest.raises(KeyboardInterrupt):
        export_savedmodel(model, str(base))
    assert sorted(os.listdir(base)) == ["1"]  # no partial version, no staging folder left
    assert read_metadata(first)["mc_samples"] == 2
    monkeypatch.undo()
    second = export_savedmodel(model, str(base))
    assert os.path.basename(second) == "2"
    with pytest.raises(ValueError, match="mc_samples"):
        export_savedmodel(model, str(base), mc_samples=0)
