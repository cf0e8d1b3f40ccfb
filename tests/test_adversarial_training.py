import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_mtvib as tm
from tf_mtvib.training import AdversarialTraining


def _batch(sample_data, n=8):
    return sample_data.x_train[:n], {k: v[:n] for k, v in sample_data.y_train.items()}


def test_perturbed_batch_replaces_the_chosen_fraction_inside_the_ball(sample_data):
    model = tm.build_mtvib(sample_data.tasks, seed=0)
    x, y = _batch(sample_data)
    settings = AdversarialTraining(eps=0.1, nb_iter=3, fraction=0.5, tasks=["top_left"], seed=1)
    mixed = settings.perturb_batch(model, tf.constant(x), y).numpy()
    change = np.abs(mixed - x).reshape(8, -1).max(1)
    assert np.all(change[:4] > 0.05) and np.all(change[:4] <= 0.1 + 1e-6)
    np.testing.assert_array_equal(mixed[4:], x[4:])
    assert mixed.min() >= 0.0 and mixed.max() <= 1.0


def test_default_settings_train_on_the_whole_attacked_batch_and_report_its_loss_and_kl(sample_data):
    """With default settings (PGD-7, eps 0.1, whole batch; Madry et al.) and
    learning rate 0, one fit step must report the task losses and the KL of
    the fully attacked batch: not of the clean batch, nor of a half-attacked
    one (the default before issue 10), nor of the crafting passes."""
    x, y = _batch(sample_data)
    keras.utils.set_random_seed(0)
    model = tm.build_mtvib(sample_data.tasks, seed=0, adversarial=AdversarialTraining(seed=1))
    model.compile(keras.optimizers.SGD(0.0))
    model(x[:1])
    # sigma near 1e-6, so that the latent noise cannot blur the task losses.
    model.bottleneck.scale_dense.bias.assign(np.full(256, -20.0, "float32"))
    batches = {
        "attacked": AdversarialTraining(seed=1).perturb_batch(model, tf.constant(x), y).numpy(),
        "half": AdversarialTraining(seed=1, fraction=0.5).perturb_batch(model, tf.constant(x), y).numpy(),
        "clean": x,
    }
    assert np.all(np.abs(batches["attacked"] - x).reshape(8, -1).max(1) > 0.05)

    history = {k: v[0] for k, v in model.fit(x, y, batch_size=8, epochs=1, verbose=0, shuffle=False).history.items()}

    # Only now: training-mode calls move the BN statistics the crafting used.
    def batch_stats(images):
        images = tf.constant(images)
        loc, scale = model.bottleneck.posterior_params(model.encoder(images, training=True))
        outputs = model(images, training=True)
        stats = {
            f"{t}_loss": float(
                tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y[t], logits=outputs[t]))
            )
            for t in y
        }
        return {"bottleneck_kl": float(tf.reduce_mean(model.bottleneck.kl_divergence(loc, scale))), **stats}

    stats = {name: batch_stats(images) for name, images in batches.items()}
    for key, reported in stats["attacked"].items():
        np.testing.assert_allclose(history[key], reported, rtol=1e-5, err_msg=key)
        for other in ("half", "clean"):
            assert abs(stats[other][key] - reported) > 1e-4 * abs(reported), (key, other, stats)  # 10x the tolerance


def test_settings_round_trip_with_the_model(sample_data, tmp_path):
    settings = AdversarialTraining(eps=0.05, nb_iter=2, fraction=0.25, tasks=["bottom_right"], seed=3)
    model = tm.build_uwl(sample_data.tasks, seed=0, adversarial=settings)
    model.compile(keras.optimizers.Adam(1e-3))
    x, y = _batch(sample_data)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0)
    model.save(tmp_path / "adv.keras")
    loaded = keras.models.load_model(tmp_path / "adv.keras")
    assert loaded.adversarial.get_config() == settings.get_config()
    with pytest.raises(ValueError, match="fraction"):
        AdversarialTraining(fraction=0.0)
    with pytest.raises(ValueError, match="attack"):
        AdversarialTraining("cw")


def test_models_saved_with_the_bare_settings_config_still_load(sample_data):
    # Before the model stored its batch hook with the hook's class, the config
    # held AdversarialTraining's bare settings; such saved models must load.
    settings = AdversarialTraining(eps=0.05, nb_iter=2, fraction=0.25, tasks=["bottom_right"], seed=3)
    config = tm.build_uwl(sample_data.tasks, seed=0, adversarial=settings).get_config()
    assert config["adversarial"]["class_name"] == "AdversarialTraining"
    config["adversarial"] = settings.get_config()
    loaded = tm.MultiTaskVIB.from_config(config)
    assert isinstance(loaded.adversarial, AdversarialTraining)
    assert loaded.adversarial.get_config() == settings.get_config()
