import keras
import numpy as np
import pytest
import tensorflow_probability as tfp

from tf_mtvib.layers import (
    AmortizedClassifier,
    BayesianDense,
    GumbelSoftmaxMixturePrior,
    kl_to_mixture,
    kl_to_weighted_sum,
)
from tf_mtvib.models.vmtl import VMTL, VMTL_SYSTEMS, build_vmtl_system

tfd = tfp.distributions


def test_mixture_kl_estimate_matches_the_gaussian_closed_form():
    rng = np.random.default_rng(0)
    loc, scale = rng.normal(size=(4, 3)).astype("float32"), rng.uniform(0.5, 1.5, (4, 3)).astype("float32")
    c_loc, c_scale = rng.normal(size=(4, 3)).astype("float32"), rng.uniform(0.5, 1.5, (4, 3)).astype("float32")
    exact = tfd.kl_divergence(
        tfd.Independent(tfd.Normal(loc, scale), 1), tfd.Independent(tfd.Normal(c_loc, c_scale), 1)
    ).numpy()
    seed = keras.random.SeedGenerator(1)
    one = kl_to_mixture(loc, scale, c_loc[:, None], c_scale[:, None], np.ones((4, 1), "float32"), 20000, seed)
    # Two identical components are the same distribution as one.
    two = kl_to_mixture(
        loc, scale, np.repeat(c_loc[:, None], 2, 1), np.repeat(c_scale[:, None], 2, 1),
        np.full((4, 2), 0.5, "float32"), 20000, seed,
    )
    for estimate in (one.numpy(), two.numpy()):
        np.testing.assert_allclose(estimate, exact, rtol=0.03, atol=0.02)


def _log_normal(x, loc, scale):
    return -0.5 * np.square((x - loc) / scale) - np.log(scale) - 0.5 * np.log(2 * np.pi)


def test_mixture_kls_match_a_sampled_reference_and_the_weighted_sum_formula():
    rng = np.random.default_rng(1)
    loc, scale = rng.normal(size=(3, 4)), rng.uniform(0.4, 1.2, (3, 4))
    c_loc, c_scale = rng.normal(size=(3, 2, 4)) * 2, rng.uniform(0.4, 1.2, (3, 2, 4))
    weights = np.array([[0.8, 0.2], [0.3, 0.7], [0.55, 0.45]])
    # Reference: 200k samples of log q - log sum_k w_k p_k, in float64.
    z = loc + scale * rng.normal(size=(200000, 3, 4))
    log_q = _log_normal(z, loc, scale).sum(-1)
    log_components = _log_normal(z[:, :, None], c_loc, c_scale).sum(-1) + np.log(weights)
    peak = log_components.max(-1, keepdims=True)
    log_p = (peak + np.log(np.exp(log_components - peak).sum(-1, keepdims=True)))[..., 0]
    reference = (log_q - log_p).mean(0)
    f32 = lambda a: a.astype("float32")  # noqa: E731
    estimate = kl_to_mixture(f32(loc), f32(scale), f32(c_loc), f32(c_scale), f32(weights), 20000,
                             keras.random.SeedGenerator(0)).numpy()
    np.testing.assert_allclose(estimate, reference, rtol=0.03, atol=0.03)
    # The closed form of the authors' code: KL to N(sum w mu, sum w^2 sigma^2).
    prior_loc = (weights[..., None] * c_loc).sum(1)
    prior_var = (np.square(weights[..., None]) * np.square(c_scale)).sum(1)
    formula = 0.5 * (np.log(prior_var / scale**2) + (scale**2 + (loc - prior_loc) ** 2) / prior_var - 1).sum(-1)
    closed = kl_to_weighted_sum(f32(loc), f32(scale), f32(c_loc), f32(c_scale), f32(weights)).numpy()
    np.testing.assert_allclose(closed, formula, rtol=1e-4)
    assert np.all(np.abs(closed - reference) > 0.1)  # two different objectives, not two estimates of one


def _tiny_vmtl(prior="mean", **kwargs):
    """3 tasks, 2 classes, identity extractor on 3 features, latent 2, with
    random fixed weights."""
    model = VMTL(3, 2, keras.layers.Identity(), latent_dim=2, prior=prior, input_shape=(3,), **kwargs)
    rng = np.random.default_rng(3)
    for variable in model.trainable_variables:
        variable.assign(rng.normal(scale=0.5, size=variable.shape).astype("float32"))
    x = {"images": rng.normal(size=(8, 3)).astype("float32"), "task": np.array([0, 0, 0, 1, 1, 2, 2, 2], "int32")}
    y = np.array([0, 0, 1, 0, 1, 0, 1, 1], "int32")
    return model, x, y


def _softplus(a):
    return np.log1p(np.exp(a))


def test_elbo_terms_equal_a_hand_computation_with_the_same_noise():
    model, x, y = _tiny_vmtl(z_samples=2, w_samples=3, mixture_kl="closed-form", seed=7)
    terms = model.elbo_terms(x, y, training=False)
    # The model draws the z noise, then the logit noise, from SeedGenerator(7).
    generator = keras.random.SeedGenerator(7)
    eps_z = keras.random.normal((2, 8, 2), seed=generator).numpy()
    eps_w = keras.random.normal((3, 2, 8, 2), seed=generator).numpy()

    def z_posterior(t, h):
        head = model.z_heads[t]
        loc = h @ head.loc_dense.kernel.numpy() + head.loc_dense.bias.numpy()
        pre = h @ head.scale_dense.kernel.numpy() + head.scale_dense.bias.numpy()
        return loc, np.minimum(_softplus(pre - 0.0) + 1e-6, 1.0)  # z_scale_shift 0, z_max_scale 1

    def w_posterior(t):
        layer = model.w_posteriors[t]
        scale = np.minimum(_softplus(layer.kernel_pre_scale.numpy() - 3.0) + 1e-6, 0.1)
        return layer.kernel_loc.numpy(), scale, layer.bias.numpy()

    def gaussian_kl(loc, scale, p_loc, p_scale):
        return 0.5 * np.sum(np.log(p_scale**2 / scale**2) + (scale**2 + (loc - p_loc) ** 2) / p_scale**2 - 1, -1)

    h, task = x["images"], x["task"]
    nll, kl_z = np.zeros(8), np.zeros(8)
    for n in range(8):
        t = task[n]
        loc, scale = z_posterior(t, h[n])
        z = loc + scale * eps_z[:, n]  # (L, D)
        w_loc, w_scale, bias = w_posterior(t)
        logits = (z @ w_loc + bias) + np.sqrt(np.square(z) @ np.square(w_scale)) * eps_w[:, :, n]  # (M, L, C)
        log_probs = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll[n] = -log_probs[..., y[n]].mean()
        # 'mean' prior: weights 1/2 on the two other tasks' q_i(z | m_i^y).
        others = [i for i in range(3) if i != t]
        parts = [z_posterior(i, h[(task == i) & (y == y[n])].mean(0)) for i in others]
        p_loc = sum(0.5 * p[0] for p in parts)
        p_scale = np.sqrt(sum(0.25 * p[1] ** 2 for p in parts))
        kl_z[n] = gaussian_kl(loc, scale, p_loc, p_scale)
    kl_w = np.zeros(3)
    for t in range(3):
        loc, scale, _ = w_posterior(t)
        parts = [w_posterior(i) for i in range(3) if i != t]
        p_loc = sum(0.5 * p[0] for p in parts)
        p_scale = np.sqrt(sum(0.25 * p[1] ** 2 for p in parts))
        kl_w[t] = gaussian_kl(loc.ravel(), scale.ravel(), p_loc.ravel(), p_scale.ravel())
    np.testing.assert_allclose(terms["nll"].numpy(), nll, rtol=1e-4)
    np.testing.assert_allclose(terms["kl_z"].numpy(), kl_z, rtol=1e-4)
    np.testing.assert_allclose(terms["kl_w"].numpy(), kl_w, rtol=1e-4)
    # The loss is the negative of Eq. 8: per-task means of (nll + w KL_z), plus w KL_w per task, over tasks.
    model.kl_weight.assign(0.3)
    per_example = nll + 0.3 * kl_z
    expected = np.mean([per_example[task == t].mean() for t in range(3)]) + 0.3 * kl_w.mean()
    model.seed_generator.state.assign(keras.random.SeedGenerator(7).state.value)  # the same noise again
    np.testing.assert_allclose(model.compute_loss(x, y, None, training=False).numpy(), expected, rtol=1e-4)
    # Keras' sample_weight: weight 0 on task 2's examples leaves tasks 0 and 1 in the average.
    model.seed_generator.state.assign(keras.random.SeedGenerator(7).state.value)
    weights = np.array([1, 1, 1, 1, 1, 0, 0, 0], "float32")
    expected = np.mean([per_example[task == t].mean() for t in range(2)]) + 0.3 * kl_w.mean()
    np.testing.assert_allclose(model.compute_loss(x, y, None, weights, training=False).numpy(), expected, rtol=1e-4)


def test_a_tasks_kl_leaves_the_other_tasks_posteriors_alone():
    import tensorflow as tf

    model, x, y = _tiny_vmtl(prior="gumbel", seed=0)
    with tf.GradientTape() as tape:
        terms = model.elbo_terms(x, y, training=True)
        task_0_kl = tf.reduce_sum(terms["kl_z"][:3]) + terms["kl_w"][0]  # the first 3 examples are task 0's
    heads = {t: model.z_heads[t].trainable_variables + model.w_posteriors[t].trainable_variables for t in range(3)}
    mixing = model.z_prior.trainable_variables + model.w_prior.trainable_variables
    grads = tape.gradient(task_0_kl, heads[0] + heads[1] + heads[2] + mixing)
    norms = [0.0 if g is None else float(tf.norm(g)) for g in grads]
    own, other = norms[: len(heads[0])], norms[len(heads[0]): len(heads[0]) + len(heads[1]) + len(heads[2])]
    assert max(other) == 0.0
    assert sum(own) > 1e-3  # the KL does train task 0's posteriors
    assert sum(norms[-len(mixing):]) > 0  # and the mixing weights


@pytest.mark.slow
def test_the_kl_weight_anneals_with_the_optimizer_step_and_mixed_precision_scales_the_loss():
    model, x, y = _tiny_vmtl(prior="gumbel", kl_anneal_rate=0.05, kl_weight=0.5, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(x, y, batch_size=2, epochs=3, verbose=0).history  # 4 steps an epoch
    weights = [min(0.5, 0.05 * step) for step in range(12)]
    np.testing.assert_allclose(history["kl_weight"], [np.mean(weights[e * 4:(e + 1) * 4]) for e in range(3)], rtol=1e-5)
    assert float(model.kl_weight.numpy()) == pytest.approx(0.5)
    assert set(history) >= {"loss", "nll", "kl_z", "kl_w", "accuracy", "task_0_accuracy"}
    # A different schedule goes through KLAnnealing, on a model that does not anneal by itself.
    from tf_mtvib.training import KLAnnealing

    with pytest.raises(ValueError, match="kl_anneal_rate"):
        model.fit(x, y, batch_size=2, epochs=1, verbose=0, callbacks=[KLAnnealing(warmup_steps=4)])
    model, x, y = _tiny_vmtl(prior="gumbel", kl_anneal_rate=0.0, kl_weight=0.5, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    history = model.fit(x, y, batch_size=2, epochs=2, verbose=0, callbacks=[KLAnnealing(warmup_steps=4)]).history
    np.testing.assert_allclose(history["kl_weight"], [0.5 * np.mean([0, 0.25, 0.5, 0.75]), 0.5], rtol=1e-5)

    from tf_mtvib import distribute

    try:
        distribute.set_mixed_precision(True)
        model, x, y = _tiny_vmtl(prior="gumbel", seed=0)
        model.compile(keras.optimizers.Adam(1e-3))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer)
        before = [v.numpy().copy() for v in model.trainable_variables]
        logs = model.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"]) and np.isfinite(logs["kl_z"])
        assert int(model.optimizer.inner_optimizer.iterations.numpy()) == 1  # the scaled step was applied
        assert any(not np.allclose(b, v.numpy()) for b, v in zip(before, model.trainable_variables))
    finally:
        distribute.set_mixed_precision(False)


def test_relaxed_weights_lie_in_0_1_and_turn_hard_as_the_temperature_falls():
    prior = GumbelSoftmaxMixturePrior(3, temperature=1.0, seed=0)
    prior.build()
    prior.relatedness_logits.assign(np.array([[2.0, -1.0], [0.0, 0.5], [-2.0, 1.0]], "float32"))
    warm = np.stack([prior.relaxed_weights().numpy() for _ in range(150)])
    prior.temperature.assign(0.02)
    cold = np.stack([prior.relaxed_weights().numpy() for _ in range(150)])
    assert np.all((warm > 0) & (warm < 1))
    assert np.all((cold >= 0) & (cold <= 1))  # float32 rounds the hardest draws to 0 or 1
    hard = lambda a: np.mean((a < 1e-3) | (a > 1 - 1e-3))  # noqa: E731
    assert hard(warm) < 0.2 and hard(cold) > 0.9
    # As tau -> 0 the relaxed weight becomes Bernoulli(pi).
    np.testing.assert_allclose((cold > 0.5).mean(0), prior.relatedness().numpy(), atol=0.13)  # 3 standard errors
    normalized = prior(training=True).numpy()
    np.testing.assert_allclose(normalized.sum(-1), 1.0, atol=1e-5)


def test_local_reparameterization_has_the_moments_of_sampled_weights():
    layer = BayesianDense(2, seed=0)
    layer.build((None, 3))
    layer.kernel_loc.assign([[0.5, -1.0], [1.0, 0.2], [-0.3, 0.7]])
    layer.kernel_pre_scale.assign(np.full((3, 2), 5.0, "float32"))  # sigma = softplus(0) ~ 0.69
    layer.bias.assign([0.1, -0.2])
    x = np.tile(np.array([[1.0, -2.0, 0.5]], "float32"), (40000, 1))
    local = layer(x, training=True).numpy()
    kernels = tfd.Normal(layer.kernel_loc, layer.kernel_scale).sample(40000, seed=3).numpy()
    explicit = np.einsum("i,nij->nj", x[0], kernels) + layer.bias.numpy()
    expected_var = np.square(x[0]) @ np.square(layer.kernel_scale.numpy())
    for samples in (local, explicit):
        standard_error = np.sqrt(expected_var / len(samples))
        assert np.all(np.abs(samples.mean(0) - (x[0] @ layer.kernel_loc.numpy() + [0.1, -0.2])) < 4 * standard_error)
        np.testing.assert_allclose(samples.var(0), expected_var, rtol=0.03)
    np.testing.assert_allclose(
        layer(x[:2], training=False).numpy()[0], x[0] @ layer.kernel_loc.numpy() + [0.1, -0.2], rtol=1e-5
    )


@pytest.mark.parametrize("system", VMTL_SYSTEMS)
def test_every_system_saves_and_loads_with_the_same_predictions(system, tmp_path):
    model = build_vmtl_system(system, 3, 5, (12,), dataset_sizes=[20, 30, 40], latent_dim=8, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    rng = np.random.default_rng(0)
    x = {"images": rng.normal(size=(60, 12)).astype("float32"), "task": np.repeat(np.arange(3), 20).astype("int32")}
    y = rng.integers(0, 5, 60)
    if system in ("stl", "vmtl", "vmtl-ac"):  # the others share these train steps
        model.fit(x, y, batch_size=30, epochs=1, verbose=0)
    path = tmp_path / f"{system}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_allclose(loaded(x, training=False), model(x, training=False), atol=1e-5)
    assert type(loaded) is type(model)
    if system == "vmtl":  # the task-indexed serving signature
        import tensorflow as tf

        from tf_mtvib.export import export_savedmodel

        served = tf.saved_model.load(export_savedmodel(model, str(tmp_path / "served")))
        out = served.signatures["serving_default"](images=tf.constant(x["images"]), task=tf.constant(x["task"]))
        expected = tf.nn.softmax(model(x, training=False)).numpy()
        np.testing.assert_allclose(out["probabilities"].numpy(), expected, atol=1e-5)
    for key in ("num_tasks", "num_classes", "task_names", "input_shape", "prior", "classifier", "dataset_sizes"):
        assert loaded.get_config().get(key) == model.get_config().get(key)


def test_layer_configs_round_trip():
    for layer in (BayesianDense(4, kl_weight=0.1, seed=2), GumbelSoftmaxMixturePrior(3, temperature=0.7, seed=1),
                  AmortizedClassifier(32)):
        clone = type(layer).from_config(layer.get_config())
        assert clone.get_config() == layer.get_config()


def test_domains_follow_the_limited_data_protocol_and_batches_mix_every_task(data_dir):
    from tf_mtvib.data.domains import load_domains, make_domain_dataset

    data = load_domains(("mnist", "rotated", "digits"), train_fraction=0.1, examples_per_task=1000, data_dir=data_dir)
    totals = [1000, 1000, 1797]
    for t, total in enumerate(totals):
        n_train = int(np.sum(data.task_train == t))
        assert n_train + int(np.sum(data.task_test == t)) == total
        assert abs(n_train - 0.1 * total) <= 10  # per-class rounding
        assert set(data.y_train[data.task_train == t]) == set(range(10))  # stratified
    # Rotated MNIST is MNIST turned by 90 degrees, not the same images.
    assert not np.allclose(
        data.x_train[data.task_train == 0][:50].mean(0), data.x_train[data.task_train == 1][:50].mean(0), atol=0.05
    )
    inputs, labels = next(iter(make_domain_dataset(data, "train", batch_size_per_task=8)))
    assert np.bincount(inputs["task"].numpy(), minlength=3).tolist() == [8, 8, 8]
    assert inputs["images"].shape == (24, 28, 28, 1) and labels.shape == (24,)
    with pytest.raises(ValueError, match="train_fraction"):
        load_domains(train_fraction=1.5, data_dir=data_dir)


@pytest.mark.slow
def test_bmtl_and_vmtl_ac_beat_chance_on_real_domains(data_dir):
    from tf_mtvib.data.domains import load_domains, make_domain_dataset
    from tf_mtvib.training import TemperatureAnnealing

    data = load_domains(train_fraction=0.2, examples_per_task=1000, data_dir=data_dir, seed=1)
    keras.utils.set_random_seed(0)
    bmtl = build_vmtl_system("bmtl", 3, 10, data.input_shape)
    bmtl.compile(keras.optimizers.Adam(1e-3))
    bmtl.fit(make_domain_dataset(data, "train", 32), epochs=4, verbose=0)
    accuracy = bmtl.evaluate(make_domain_dataset(data, "test", 100), return_dict=True, verbose=0)["accuracy"]
    assert accuracy > 0.6, accuracy  # chance is 0.1

    # VMTL-AC with the builder's defaults (the paper's annealing) once sat at chance.
    vmtl_ac = build_vmtl_system("vmtl-ac", 3, 10, data.input_shape, seed=0)
    vmtl_ac.compile(keras.optimizers.Adam(1e-3))
    history = vmtl_ac.fit(
        make_domain_dataset(data, "train", 32), epochs=4, verbose=0,
        callbacks=[TemperatureAnnealing(1.0, rate=0.97, floor=0.4)],
    ).history
    # Logged after each epoch: the value set before its last step (the optimizer's step count).
    steps = int(np.ceil(max(data.train_sizes) / 32))
    expected = [max(0.4, 0.97 ** ((e + 1) * steps - 1)) for e in range(4)]
    assert expected[0] > 0.4 and expected[-1] == 0.4  # the ramp and the floor both show
    np.testing.assert_allclose(history["temperature"], expected, rtol=1e-5)
    assert history["nll"][-1] < history["nll"][0]
    assert np.isfinite(history["kl_z"]).all() and np.isfinite(history["kl_w"]).all()
    accuracy = vmtl_ac.evaluate(make_domain_dataset(data, "test", 100), return_dict=True, verbose=0)["accuracy"]
    assert accuracy > 0.6, accuracy


def test_office_style_folders_become_feature_tasks(tmp_path):
    from PIL import Image

    from tf_mtvib.data.domains import load_image_folder_domains

    rng = np.random.default_rng(0)
    for domain in ("art", "clipart"):
        for name in ("bike", "cup", "pen"):
            folder = tmp_path / domain / name
            folder.mkdir(parents=True)
            for i in range(4):
                Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    data = load_image_folder_domains(str(tmp_path), extractor="MobileNetV3Small", weights=None, image_size=32,
                                     train_fraction=0.25)
    assert data.task_names == ["art", "clipart"] and data.num_classes == 3
    assert data.x_train.ndim == 2 and data.train_sizes == [3, 3]  # one image per class and domain
    assert len(data.y_test) == 18
    model = build_vmtl_system("vmtl", 2, 3, data.input_shape, dataset_sizes=data.train_sizes, latent_dim=8)
    assert model(data.inputs("test"), training=False).shape == (18, 3)
    with pytest.raises(FileNotFoundError, match="weights"):
        load_image_folder_domains(str(tmp_path), weights=str(tmp_path / "missing.h5"))


def test_vmtl_trains_under_mirrored_strategy_with_its_annealing():
    import tensorflow as tf

    # conftest splits the CPU in two. Reducing through one device keeps this strategy's collectives
    # from clashing with those of the strategies other tests made in this process.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        model, x, y = _tiny_vmtl(prior="gumbel", kl_anneal_rate=0.1, kl_weight=0.5, seed=0)
        model.compile(keras.optimizers.SGD(0.01))
    history = model.fit(x, y, batch_size=4, epochs=2, verbose=0, shuffle=False).history  # 2 steps an epoch
    np.testing.assert_allclose(history["kl_weight"], [0.05, 0.25], rtol=1e-5)
    assert np.isfinite(history["loss"]).all() and int(model.optimizer.iterations.numpy()) == 4
