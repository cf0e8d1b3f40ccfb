import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tf_mtvib.layers import (
    AmortizedClassifier,
    BayesianDense,
    FixedWeighting,
    FusedBatchNormalization,
    GaussianBottleneck,
    GumbelSoftmaxMixturePrior,
    LearnedWeightsMixturePrior,
    MeanMixturePrior,
    UncertaintyWeighting,
)

tfd = tfp.distributions


def _bottleneck(beta=1e-3, seed=3, features=6, latent=4):
    layer = GaussianBottleneck(latent, beta=beta, seed=seed)
    layer.build((None, features))
    return layer


def test_kl_added_equals_closed_form_eq10_and_tfp():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 6)).astype("float32")
    layer = _bottleneck(beta=0.25)
    layer(x, training=True)
    mu, sigma = (t.numpy().astype("float64") for t in layer.posterior_params(x))
    closed_form = 0.5 * np.sum(sigma**2 + mu**2 - 1.0 - np.log(sigma**2), axis=1)
    tfp_kl = tfd.kl_divergence(
        tfd.MultivariateNormalDiag(mu, sigma), tfd.MultivariateNormalDiag(np.zeros_like(mu), np.ones_like(sigma))
    ).numpy()
    np.testing.assert_allclose(closed_form, tfp_kl, rtol=1e-5)
    assert len(layer.losses) == 1
    np.testing.assert_allclose(float(layer.losses[0]), 0.25 * closed_form.mean(), rtol=1e-5)
    np.testing.assert_allclose(float(layer.kl_tracker.result()), closed_form.mean(), rtol=1e-5)
    layer(x, training=False)  # inference calls leave the metric alone
    np.testing.assert_allclose(float(layer.kl_tracker.result()), closed_form.mean(), rtol=1e-5)


def test_kl_matches_monte_carlo_estimate():
    layer = _bottleneck()
    # Larger scales than at initialisation so the estimate is not dominated by log sigma.
    mu = tf.constant([[0.5, -1.0, 0.2, 0.0]])
    sigma = tf.constant([[0.3, 1.5, 0.8, 1.0]])
    exact = float(layer.kl_divergence(mu, sigma)[0])
    q = tfd.Independent(tfd.Normal(mu, sigma), 1)
    p = tfd.Independent(tfd.Normal(tf.zeros_like(mu), tf.ones_like(sigma)), 1)
    z = q.sample(200_000, seed=(1, 2))
    estimate = float(tf.reduce_mean(q.log_prob(z) - p.log_prob(z)))
    assert abs(estimate - exact) < 0.02, (estimate, exact)


def test_samples_follow_posterior_and_inference_is_the_mean():
    x = np.random.default_rng(1).normal(size=(3, 6)).astype("float32")
    layer = _bottleneck()
    mu, sigma = (t.numpy() for t in layer.posterior_params(x))
    draws = layer.sample(x, num_samples=20_000).numpy()
    assert draws.shape == (20_000, 3, 4)
    np.testing.assert_allclose(draws.mean(0), mu, atol=4 * sigma.max() / np.sqrt(20_000) + 1e-6)
    np.testing.assert_allclose(draws.std(0), sigma, rtol=0.05)
    np.testing.assert_array_equal(layer(x, training=False).numpy(), mu)
    assert not np.allclose(layer(x, training=True).numpy(), mu)
    assert np.all(sigma > 0)


def test_gradients_reach_loc_and_scale_through_task_loss_and_kl():
    x = np.random.default_rng(2).normal(size=(4, 6)).astype("float32")
    layer = _bottleneck(beta=1.0)
    kernels = [layer.loc_dense.kernel, layer.scale_dense.kernel]
    with tf.GradientTape(persistent=True) as tape:
        z = layer(x, training=True)
        task_loss = tf.reduce_sum(tf.square(z - 1.0))
        kl_loss = tf.add_n(layer.losses)
    for loss in (task_loss, kl_loss):
        for grad in tape.gradient(loss, kernels):
            assert grad is not None and float(tf.reduce_max(tf.abs(grad))) > 0


def test_bottleneck_errors():
    with pytest.raises(ValueError, match="latent_dim"):
        GaussianBottleneck(0)
    with pytest.raises(ValueError, match="beta"):
        GaussianBottleneck(4, beta=-1.0)
    with pytest.raises(ValueError, match="num_samples"):
        GaussianBottleneck(4, num_samples=0)


def test_uncertainty_weighting_is_eq23_by_hand():
    weighting = UncertaintyWeighting(["classification", "regression"])
    weighting.build()
    s = np.array([0.7, -0.4], "float32")
    weighting.log_variances.assign(s)
    losses = np.array([1.3, 2.5], "float32")
    expected = np.exp(-s[0]) * losses[0] + s[0] / 2 + np.exp(-s[1]) * losses[1] / 2 + s[1] / 2
    np.testing.assert_allclose(float(weighting(list(losses))), expected, rtol=1e-6)
    # The same in the paper's notation: CE / sigma^2 + log sigma.
    sigma = np.exp(s[0] / 2)
    np.testing.assert_allclose(
        np.exp(-s[0]) * losses[0] + s[0] / 2, losses[0] / sigma**2 + np.log(sigma), rtol=1e-6
    )
    np.testing.assert_allclose(weighting.sigmas.numpy(), np.exp(s / 2), rtol=1e-6)


def test_uncertainty_weighting_gradient_and_bound():
    weighting = UncertaintyWeighting(["classification"], log_variance_bound=2.0)
    weighting.build()
    with tf.GradientTape() as tape:
        total = weighting([tf.constant(3.0)])
    # d/ds (exp(-s) L + s/2) at s = 0 is 1/2 - L.
    np.testing.assert_allclose(float(tape.gradient(total, weighting.log_variances)[0]), 0.5 - 3.0, rtol=1e-6)
    optimizer = keras.optimizers.SGD(10.0)
    for _ in range(3):
        with tf.GradientTape() as tape:
            total = weighting([tf.constant(30.0)])
        optimizer.apply_gradients([(tape.gradient(total, weighting.log_variances), weighting.log_variances)])
    assert float(weighting.log_variances[0]) == pytest.approx(2.0)


def test_fixed_weighting_and_errors():
    np.testing.assert_allclose(float(FixedWeighting([0.2, 0.8])(np.array([1.0, 2.0], "float32"))), 1.8, rtol=1e-6)
    np.testing.assert_allclose(float(FixedWeighting(num_tasks=3)(np.array([1.0, 2.0, 3.0], "float32"))), 6.0, rtol=1e-6)
    with pytest.raises(ValueError, match="weights"):
        FixedWeighting([-1.0, 1.0])
    with pytest.raises(ValueError, match="task_kinds"):
        UncertaintyWeighting(["classify"])
    with pytest.raises(ValueError, match="Expected 2 task losses"):
        FixedWeighting([0.5, 0.5])(np.array([1.0, 2.0, 3.0], "float32"))


def test_fused_batch_normalization_matches_keras():
    x = np.random.default_rng(3).normal(2.0, 3.0, size=(4, 5, 5, 3)).astype("float32")
    fused = FusedBatchNormalization(momentum=0.5)
    plain = keras.layers.BatchNormalization(momentum=0.5)
    for layer in (fused, plain):
        layer.build(x.shape)
        layer.gamma.assign([1.0, 2.0, 0.5])
        layer.beta.assign([0.0, -1.0, 3.0])
    np.testing.assert_allclose(fused(x, training=True), plain(x, training=True), atol=1e-4)
    n = 4 * 5 * 5
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=1e-5)
    # The fused kernel's moving variance carries Bessel's correction n / (n - 1).
    expected = 0.5 + 0.5 * np.var(x, axis=(0, 1, 2)) * n / (n - 1)
    np.testing.assert_allclose(fused.moving_variance.numpy(), expected, rtol=1e-4)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), rtol=1e-2, atol=1e-2)


def test_fused_batch_normalization_trains_on_bfloat16_maps_with_float32_statistics():
    x = np.random.default_rng(4).normal(2.0, 3.0, size=(8, 6, 6, 3)).astype("float32")
    fused = FusedBatchNormalization(momentum=0.5, dtype="mixed_bfloat16")
    plain = keras.layers.BatchNormalization(momentum=0.5)
    outputs = {layer: layer(x, training=True) for layer in (fused, plain)}
    assert outputs[fused].dtype == "bfloat16" and fused.moving_variance.dtype == "float32"
    # bfloat16 keeps 8 bits of mantissa: outputs of unit scale agree to about 1e-2.
    np.testing.assert_allclose(np.asarray(outputs[fused], "float32"), outputs[plain], atol=3e-2)
    np.testing.assert_allclose(fused.moving_mean.numpy(), plain.moving_mean.numpy(), rtol=2e-2)


# One harness over every public layer (in the manner of keras' LayerTest and
# keras-hub's TestCase). Each case: constructor kwargs, the input shape without
# the batch axis (None: the layer is called without inputs), the output shapes
# without the batch axis, whether outputs carry a batch axis, the losses one
# training call adds, whether training outputs draw noise (`seeded`) and the
# seed generators the layer owns (the ablation priors inherit the Gumbel
# prior's generator though they draw nothing).
LAYER_CASES = {
    "GaussianBottleneck": dict(cls=GaussianBottleneck, kwargs=dict(latent_dim=3, beta=0.1, seed=5),
                               input_shape=(4,), output_shapes=[(3,)], losses=1, seeded=True, seed_generators=1),
    "BayesianDense": dict(cls=BayesianDense, kwargs=dict(units=3, kl_weight=0.1, seed=5),
                          input_shape=(4,), output_shapes=[(3,)], losses=1, seeded=True, seed_generators=1),
    "AmortizedClassifier": dict(cls=AmortizedClassifier, kwargs=dict(hidden_units=5),
                                input_shape=(4,), output_shapes=[(4,), (4,)], losses=0, seeded=False),
    "FusedBatchNormalization": dict(cls=FusedBatchNormalization, kwargs=dict(momentum=0.5),
                                    input_shape=(3, 3, 2), output_shapes=[(3, 3, 2)], losses=0, seeded=False),
    # Weighting layers take the K task losses: a list of scalars or a (..., K) tensor; output a scalar.
    "UncertaintyWeighting": dict(cls=UncertaintyWeighting, kwargs=dict(task_kinds=["classification", "regression"]),
                                 input_shape=(2,), output_shapes=[()], batched=False, losses=0, seeded=False,
                                 as_list=True),
    "FixedWeighting": dict(cls=FixedWeighting, kwargs=dict(weights=[0.3, 0.7]),
                           input_shape=(2,), output_shapes=[()], batched=False, losses=0, seeded=False,
                           as_list=True),
    # Mixture priors ignore their inputs and return (T, T-1) weights.
    "GumbelSoftmaxMixturePrior": dict(cls=GumbelSoftmaxMixturePrior, kwargs=dict(num_tasks=3, temperature=0.5, seed=5),
                                      input_shape=None, output_shapes=[(3, 2)], batched=False, losses=0, seeded=True,
                                      seed_generators=1),
    "LearnedWeightsMixturePrior": dict(cls=LearnedWeightsMixturePrior, kwargs=dict(num_tasks=3, seed=5),
                                       input_shape=None, output_shapes=[(3, 2)], batched=False, losses=0,
                                       seeded=False, seed_generators=1),
    "MeanMixturePrior": dict(cls=MeanMixturePrior, kwargs=dict(num_tasks=3, seed=5),
                             input_shape=None, output_shapes=[(3, 2)], batched=False, losses=0, seeded=False,
                             seed_generators=1),
}
BATCH = 2


def _eager_inputs(case):
    if case["input_shape"] is None:
        return None
    if case.get("as_list"):
        return [tf.constant(v) for v in np.array([1.5, 0.5], "float32")]
    return np.random.default_rng(0).normal(size=(BATCH,) + case["input_shape"]).astype("float32")


def _model_inputs(case):
    """The data a one-layer functional model (keras.Input of the case's shape) is fed."""
    shape = case["input_shape"] or (1,)
    return np.random.default_rng(0).normal(size=(BATCH,) + shape).astype("float32")


def _expected_shapes(case, batched):
    return [((BATCH,) if batched else ()) + s for s in case["output_shapes"]]


def _check_outputs(outputs, shapes):
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    assert [tuple(o.shape) for o in outputs] == shapes
    assert all(keras.backend.standardize_dtype(o.dtype) == "float32" for o in outputs)
    return [keras.ops.convert_to_numpy(o) for o in outputs]


def _one_layer_model(case, layer):
    inputs = keras.Input(shape=case["input_shape"] or (1,))
    return keras.Model(inputs, layer(inputs))


def _built(case, **overrides):
    layer = case["cls"](**{**case["kwargs"], **overrides})
    layer.build(None if case["input_shape"] is None else (None,) + case["input_shape"])
    return layer


def _seed_generator_count(layer):
    return sum("seed_generator" in v.path for v in layer.variables)


@pytest.mark.parametrize("name", list(LAYER_CASES))
def test_layer_harness(name, tmp_path):
    case = LAYER_CASES[name]
    eager_shapes = _expected_shapes(case, case.get("batched", True) and not case.get("as_list"))
    layer = _built(case)
    assert layer.built
    assert _seed_generator_count(layer) == case.get("seed_generators", 0)

    # Eager calls in both training modes; the losses of one training call.
    x = _eager_inputs(case)
    _check_outputs(layer(x, training=False), eager_shapes)
    _check_outputs(layer(x, training=True), eager_shapes)
    assert len(layer.losses) == case["losses"]

    # Symbolic call on a keras.Input (batch axis None).
    if case["input_shape"] is not None:
        symbolic = layer(keras.Input(shape=case["input_shape"]))
        symbolic = symbolic if isinstance(symbolic, (list, tuple)) else [symbolic]
        batch = (None,) if case.get("batched", True) else ()
        assert [tuple(s.shape) for s in symbolic] == [batch + s for s in case["output_shapes"]]

    # get_config / from_config round trip.
    config = layer.get_config()
    assert case["cls"].from_config(config).get_config() == config

    # Same seed (or no seed) and weights: the same training-mode output; another seed, other noise.
    repeats = []
    for seed in (None, None, 6):
        twin = _built(case) if seed is None or not case["seeded"] else _built(case, seed=seed)
        twin.set_weights(layer.get_weights())
        repeats.append(_check_outputs(twin(x, training=True), eager_shapes))
    for a, b in zip(repeats[0], repeats[1]):
        np.testing.assert_array_equal(a, b)
    if case["seeded"]:
        assert not np.allclose(repeats[0][0], repeats[2][0])

    # Save / load inside a tiny keras.Model: the same inference output.
    model = _one_layer_model(case, case["cls"](**case["kwargs"]))
    data = _model_inputs(case)
    batched = case.get("batched", True)
    before = _check_outputs(model(data, training=False), _expected_shapes(case, batched))
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    after = _check_outputs(keras.models.load_model(path)(data, training=False), _expected_shapes(case, batched))
    for b, a in zip(before, after):
        np.testing.assert_allclose(a, b, rtol=1e-6)
