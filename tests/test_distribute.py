import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_mtvib as tm
from tf_mtvib import attacks, distribute
from tf_mtvib.data.pipeline import make_dataset


def _small_model(tasks):
    keras.utils.set_random_seed(1)
    encoder = keras.Sequential(
        [keras.Input((36, 36, 1)), keras.layers.Flatten(), keras.layers.Dense(64, activation="relu")], name="encoder"
    )
    decoders = {t.name: keras.Sequential([keras.layers.Dense(10)], name=f"decoder_{t.name}") for t in tasks}
    model = tm.MultiTaskVIB(
        tasks, encoder, decoders, tm.GaussianBottleneck(16, beta=1e-3, seed=3, name="bottleneck"),
        tm.UncertaintyWeighting(["classification"] * len(tasks), name="weighting"), input_shape=(36, 36, 1),
    )
    model.build((None, 36, 36, 1))
    # Plain SGD: its steps scale with the gradient, so a wrongly scaled
    # replica loss shows up in the curve (Adam would normalize it away).
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    return model


class _StepLogs(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.steps = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps.append({k: float(v) for k, v in logs.items()})


def test_mirrored_on_two_cpus_follows_the_default_strategy_loss_curve(sample_data):
    mirrored = distribute.get_strategy("mirrored", devices=["/cpu:0", "/cpu:1"])
    assert mirrored.num_replicas_in_sync == 2
    curves, models = {}, {}
    for name, strategy in (("default", distribute.get_strategy("default")), ("mirrored", mirrored)):
        with strategy.scope():
            models[name] = _small_model(sample_data.tasks)
        if name == "mirrored":
            for variable, value in zip(models[name].weights, models["default"].initial_weights):
                variable.assign(value)
        else:
            models[name].initial_weights = [v.numpy() for v in models[name].weights]
        logs = _StepLogs()
        y = {k: v[:640] for k, v in sample_data.y_train.items()}
        data = make_dataset(sample_data.x_train[:640], y, 64)  # global batch 64
        models[name].fit(data, epochs=1, callbacks=[logs], verbose=0)
        curves[name] = logs.steps

    assert len(curves["default"]) == len(curves["mirrored"]) == 10
    # Same global batch, same start: only the latent noise differs (each
    # replica draws its own), so the curves agree to 1e-3 relative.
    for key in ("loss", "bottleneck_kl", "top_left_loss", "bottom_right_loss"):
        default = np.array([s[key] for s in curves["default"]])
        np.testing.assert_allclose([s[key] for s in curves["mirrored"]], default, rtol=1e-3, err_msg=key)
    sigmas = [m.weighting.sigmas.numpy() for m in models.values()]
    np.testing.assert_allclose(sigmas[1], sigmas[0], rtol=1e-3)
    assert np.abs(sigmas[0] - 1.0).max() > 1e-3  # the weights did move
    # The loss fell, so the replica gradients were summed, not averaged twice or duplicated.
    assert curves["mirrored"][-1]["loss"] < curves["mirrored"][0]["loss"]

    # Attacks run on a model built under the strategy and match the same weights without it.
    twin = models["default"]
    for variable, value in zip(twin.weights, models["mirrored"].get_weights()):
        variable.assign(value)
    x, y = sample_data.x_test[:64], {k: v[:64] for k, v in sample_data.y_test.items()}
    under_strategy = attacks.fast_gradient_method(models["mirrored"], x, y=y, eps=0.1, clip_min=0.0, clip_max=1.0)
    plain = attacks.fast_gradient_method(twin, x, y=y, eps=0.1, clip_min=0.0, clip_max=1.0)
    assert np.mean(np.isclose(under_strategy.numpy(), plain.numpy(), atol=1e-6)) > 0.99


@pytest.mark.slow
@pytest.mark.parametrize("precision, policy", [("float16", "mixed_float16"), ("bfloat16", "mixed_bfloat16")])
def test_mixed_precision_keeps_logits_losses_and_weights_in_float32(sample_data, precision, policy):
    try:
        assert distribute.set_precision(precision) == policy
        model = tm.build_mtvib(sample_data.tasks, latent_dim=16, seed=0)
        model.compile(keras.optimizers.Adam(1e-3))
        y = {k: v[:100] for k, v in sample_data.y_train.items()}
        history = model.fit(sample_data.x_train[:100], y, batch_size=50, epochs=1, verbose=0)
    finally:
        distribute.set_precision("float32")
    # Loss scaling guards float16's narrow range; bfloat16 has float32's.
    assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer) == (precision == "float16")
    encoder = model.get_layer("encoder")
    assert encoder.get_layer("conv1").compute_dtype == precision
    # The convolutional batch norm trains on the low-precision maps, its statistics in float32.
    assert encoder.get_layer("conv1_bn")(tf.ones((2, 4, 4, 64), precision), training=True).dtype == precision
    assert encoder.get_layer("conv1_bn").moving_mean.dtype == "float32"
    outputs = model(sample_data.x_test[:4], training=False)
    assert all(v.dtype == tf.float32 for v in outputs.values())
    assert model.weighting.compute_dtype == "float32"
    assert all(w.dtype == "float32" for w in model.weights)
    assert np.isfinite(history.history["loss"][-1])


def test_precision_names_are_checked():
    with pytest.raises(ValueError, match="precision='bf16'"):
        distribute.set_precision("bf16")
    assert keras.mixed_precision.global_policy().name == "float32"


def test_unknown_strategy_is_named():
    with pytest.raises(ValueError, match="strategy"):
        distribute.get_strategy("tpu")
    with pytest.raises(ValueError, match="devices"):
        distribute.get_strategy("default", devices=["/cpu:0"])


def test_a_single_process_is_the_chief_and_writes_its_own_folder(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    for strategy in (tf.distribute.get_strategy(), distribute.get_strategy("mirrored")):
        assert distribute.worker_role(strategy) == (None, None) and distribute.is_chief(strategy)
        assert distribute.write_folder("runs/x", strategy) == "runs/x"
    distribute.check_same_on_all_workers(tf.distribute.get_strategy(), 3, "the epoch")  # nothing to compare
