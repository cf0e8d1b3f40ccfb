"""Gaussian information bottleneck (MTVIB Eqs. 8-10; Alemi et al. 2017)."""

import keras
from keras import ops

from tf_mtvib.layers.gaussian import bounded_scale, kl_to_standard_normal, reparameterized_sample

# Shifts the pre-softplus scale so that a freshly initialised encoder starts
# near sigma = softplus(-5) ~ 0.0067 (Alemi et al.): the decoders first see an
# almost deterministic code and the KL then trades it off.
_SCALE_SHIFT = 5.0


@keras.saving.register_keras_serializable(package="tf_mtvib")
class GaussianBottleneck(keras.layers.Layer):
    """Stochastic code z ~ q(z|x) = N(mu(x), diag(sigma(x)^2)) with a KL penalty.

    Two linear maps turn features `(batch, features)` into `mu` and a
    pre-softplus scale `rho`, both `(batch, latent_dim)`; the scale is
    `sigma = softplus(rho - 5) + 1e-6`, bounded away from 0 and never the exp
    of an unbounded log-variance.

    While training, `call` returns `z = mu + sigma * eps`, `eps ~ N(0, I)`
    (the reparameterization of Eq. 9); at inference it returns `mu`. Every
    call adds `kl_weight * mean_batch KL(q(z|x) || N(0, I))` (Eq. 10) with
    `add_loss`, where `kl_weight` is a non-trainable variable that starts at
    `beta` (so a schedule such as `tf_mtvib.training.KLAnnealing` can change
    it during `fit` without retracing); training calls also record the unweighted KL in the metric
    `<name>_kl`, and every call keeps it as `latest_kl` (a `MultiTaskVIB`
    records it for its validation pass, so that `val_<name>_kl` is the KL
    inside `val_loss`).

    Args:
        latent_dim: dimension d of z.
        beta: weight of the KL term. Default value: `1e-3` (MTVIB Sec. VI-B).
        num_samples: latent samples whose class probabilities the owning model
            averages at inference (Alemi et al. use 12). Default value: `1`,
            which means the deterministic mean code is used.
        seed: int seed of the reparameterization noise. Default value: `None`.
        scale_shift: the 5 of `softplus(rho - 5)`; `0` starts near sigma =
            0.69, for KLs to priors other than N(0, I) that a near-zero
            sigma would make huge (VMTL). Default value: `5.0`.
    """

    def __init__(self, latent_dim, beta=1e-3, num_samples=1, seed=None, scale_shift=_SCALE_SHIFT, max_scale=None,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(latent_dim, int) or latent_dim < 1:
            raise ValueError(
                "`latent_dim` must be a positive int, received "
                f"latent_dim={latent_dim!r}."
            )
        if not beta >= 0:
            raise ValueError(f"`beta` must be >= 0, received beta={beta!r}.")
        if not isinstance(num_samples, int) or num_samples < 1:
            raise ValueError(
                "`num_samples` must be an int >= 1, received "
                f"num_samples={num_samples!r}."
            )
        self.latent_dim = latent_dim
        self.beta = beta
        self.num_samples = num_samples
        self.seed = seed
        self.scale_shift = float(scale_shift)
        self.max_scale = max_scale

        # === Layers ===
        self.loc_dense = keras.layers.Dense(latent_dim, name="loc")
        self.scale_dense = keras.layers.Dense(latent_dim, name="pre_scale")
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.kl_tracker = keras.metrics.Mean(name=f"{self.name}_kl")

    def build(self, input_shape):
        self.loc_dense.build(input_shape)
        self.scale_dense.build(input_shape)
        self.kl_weight = self.add_weight(
            name="kl_weight", shape=(), initializer=keras.initializers.Constant(self.beta), trainable=False,
            dtype="float32", aggregation="only_first_replica",
        )

    def posterior_params(self, inputs):
        """Returns `(mu, sigma)` of q(z|x), each `(batch, latent_dim)`."""
        loc = self.loc_dense(inputs)
        return loc, bounded_scale(self.scale_dense(inputs), self.scale_shift, self.max_scale)

    def kl_divergence(self, loc, scale):
        """Per-example KL(N(loc, scale^2) || N(0, I)), shape `(batch,)` (Eq. 10).

        Computed by TFP in float32 whatever the layer's compute dtype.
        """
        return kl_to_standard_normal(loc, scale)

    def sample(self, inputs, num_samples=None):
        """Draws reparameterized codes, shape `(num_samples, batch, latent_dim)`.

        Adds no loss; `num_samples` defaults to the layer's `num_samples`.
        """
        num_samples = num_samples or self.num_samples
        loc, scale = self.posterior_params(inputs)
        return reparameterized_sample(loc, scale, self.seed_generator, (num_samples,))

    def call(self, inputs, training=None):
        loc, scale = self.posterior_params(inputs)
        kl = ops.mean(self.kl_divergence(loc, scale))
        self.latest_kl = kl
        if training:
            # Only training calls: inference calls (attacks crafting examples,
            # exported serving functions) must not touch metric variables.
            self.kl_tracker.update_state(kl)
        self.add_loss(ops.cast(self.kl_weight, kl.dtype) * kl)
        if training:
            return reparameterized_sample(loc, scale, self.seed_generator)
        return loc

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.latent_dim,)

    def get_config(self):
        return {
            **super().get_config(),
            "latent_dim": self.latent_dim,
            "beta": self.beta,
            "num_samples": self.num_samples,
            "seed": self.seed,
            "scale_shift": self.scale_shift,
            "max_scale": self.max_scale,
        }
