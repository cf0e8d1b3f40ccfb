import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_mtvib as tm
from tf_mtvib import attacks
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


def test_trains_on_attacked_batch_and_reports_its_kl(sample_data):
    """With learning rate 0, one fit step on a fully attacked batch (an L2 fast
    gradient step: no random start, and no sign() that rounding could flip)
    must report the KL of the attacked batch, not of the clean one nor of the
    crafting passes."""
    x, y = _batch(sample_data)
    keras.utils.set_random_seed(0)
    model = tm.build_mtvib(sample_data.tasks, seed=0, adversarial=AdversarialTraining("fgsm", eps=3.0, norm=2, fraction=1.0))
    model.compile(keras.optimizers.SGD(0.0))
    # sigma near 0.7 instead of 0.007, so that the KL is led by the input-dependent mu.
    model.bottleneck.scale_dense.bias.assign(np.full(256, 5.0, "float32"))
    expected_x = attacks.fast_gradient_method(model, x, y, eps=3.0, norm=2, clip_min=0.0, clip_max=1.0).numpy()

    def batch_kl(images):
        loc, scale = model.bottleneck.posterior_params(model.encoder(tf.constant(images), training=True))
        return float(tf.reduce_mean(model.bottleneck.kl_divergence(loc, scale)))

    history = model.fit(x, y, batch_size=8, epochs=1, verbose=0).history
    # Only now: training-mode calls move the BN statistics the crafting used.
    attacked_kl, clean_kl = batch_kl(expected_x), batch_kl(x)
    assert abs(attacked_kl - clean_kl) > 1e-4 * abs(clean_kl), (attacked_kl, clean_kl)  # 10x the tolerance below
    np.testing.assert_allclose(history["bottleneck_kl"][0], attacked_kl, rtol=1e-5)


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
