import keras
import numpy as np
import pytest
import tensorflow_probability as tfp

from tf_mtvib.layers import AmortizedClassifier, BayesianDense, GumbelSoftmaxMixturePrior, kl_to_mixture
from tf_mtvib.models.vmtl import VMTL_SYSTEMS, build_vmtl_system

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
    np.testing.assert_allclose(layer(x[:2], training=False).numpy()[0], x[0] @ layer.kernel_loc.numpy() + [0.1, -0.2], rtol=1e-5)


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
    assert not np.allclose(data.x_train[data.task_train == 0][:50].mean(0), data.x_train[data.task_train == 1][:50].mean(0), atol=0.05)
    inputs, labels = next(iter(make_domain_dataset(data, "train", batch_size_per_task=8)))
    assert np.bincount(inputs["task"].numpy(), minlength=3).tolist() == [8, 8, 8]
    assert inputs["images"].shape == (24, 28, 28, 1) and labels.shape == (24,)
    with pytest.raises(ValueError, match="train_fraction"):
        load_domains(train_fraction=1.5, data_dir=data_dir)


def test_bmtl_and_vmtl_train_on_real_domains_with_annealing_callbacks(data_dir):
    from tf_mtvib.data.domains import load_domains, make_domain_dataset
    from tf_mtvib.training import KLAnnealing, TemperatureAnnealing

    data = load_domains(train_fraction=0.2, examples_per_task=1000, data_dir=data_dir, seed=1)
    keras.utils.set_random_seed(0)
    bmtl = build_vmtl_system("bmtl", 3, 10, data.input_shape)
    bmtl.compile(keras.optimizers.Adam(1e-3))
    bmtl.fit(make_domain_dataset(data, "train", 32), epochs=4, verbose=0)
    accuracy = bmtl.evaluate(make_domain_dataset(data, "test", 100), return_dict=True, verbose=0)["accuracy"]
    assert accuracy > 0.6, accuracy  # chance is 0.1

    vmtl = build_vmtl_system("vmtl", 3, 10, data.input_shape, dataset_sizes=data.train_sizes, seed=0)
    vmtl.compile(keras.optimizers.Adam(1e-3))
    history = vmtl.fit(
        make_domain_dataset(data, "train", 32), epochs=2, verbose=0,
        callbacks=[KLAnnealing(warmup_steps=10, final=0.5), TemperatureAnnealing(1.0, rate=0.9, floor=0.4)],
    ).history
    assert history["kl_weight"] == [0.5, 0.5]  # 12 steps per epoch > 10 warm-up steps
    np.testing.assert_allclose(history["temperature"], [max(0.4, 0.9**11), 0.4], rtol=1e-6)
    assert history["nll"][-1] < history["nll"][0]
    assert np.isfinite(history["kl_z"]).all() and np.isfinite(history["kl_w"]).all()


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
