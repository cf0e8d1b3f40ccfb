import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from tf_mtvib.layers import FixedWeighting, FusedBatchNormalization, GaussianBottleneck, UncertaintyWeighting

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


def test_same_seed_repeats_noise_and_other_seed_differs():
    x = np.ones((2, 6), "float32")
    draws = []
    for seed in (7, 7, 8):
        layer = GaussianBottleneck(4, seed=seed)
        layer.build((None, 6))
        layer.set_weights([np.full(w.shape, 0.1, "float32") for w in layer.get_weights()])
        draws.append(layer(x, training=True).numpy())
    np.testing.assert_array_equal(draws[0], draws[1])
    assert not np.allclose(draws[0], draws[2])


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


def test_bottleneck_config_round_trip_and_errors():
    layer = GaussianBottleneck(8, beta=0.5, num_samples=12, seed=4, name="b")
    clone = GaussianBottleneck.from_config(layer.get_config())
    assert (clone.latent_dim, clone.beta, clone.num_samples, clone.seed, clone.name) == (8, 0.5, 12, 4, "b")
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
    clone = FixedWeighting.from_config(FixedWeighting([0.3, 0.7]).get_config())
    assert clone.task_weights == [0.3, 0.7]
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
    clone = FusedBatchNormalization.from_config(fused.get_config())
    assert clone.momentum == 0.5
