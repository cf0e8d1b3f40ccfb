"""Mean-field Gaussian dense layer with the local reparameterization trick
(VMTL Sec. 2.4; Kingma et al. 2015)."""

import keras
import tensorflow_probability as tfp
from keras import ops

from tf_mtvib.layers.gaussian import bounded_scale, kl_to_standard_normal, reparameterized_sample

tfd = tfp.distributions

# Initial weight std softplus(-5) ~ 0.0067: a near-deterministic start.
_SCALE_SHIFT = 5.0


@keras.saving.register_keras_serializable(package="tf_mtvib")
class BayesianDense(keras.layers.Layer):
    """`y = x W + b` with q(W) = prod_ij N(mu_ij, sigma_ij^2), b deterministic.

    While training, `call` samples the pre-activations directly (local
    reparameterization): for inputs `x (batch, in)`,
    `y ~ N(x mu + b, x^2 sigma^2)` independently per example and unit, which
    has the distribution of `x W + b` for one W drawn per example, with lower
    gradient variance than one W shared by the batch. At inference `call`
    returns the mean `x mu + b`.

    With `kl_weight > 0`, every call adds `kl_weight * KL(q(W) || N(0, I))`
    (closed form, TFP) with `add_loss`; a model with other priors (VMTL's
    mixtures) sets `kl_weight=0` and reads `posterior_params()` itself.

    Args:
        units: output width.
        kl_weight: weight of the KL to the N(0, I) prior added per call.
            Default value: `0.0`.
        seed: int seed of the sampling noise.
        scale_shift: initial sigma is `softplus(-scale_shift)`. Default
            value: `5.0` (sigma ~ 0.0067).
        max_scale: upper bound of sigma, or `None` (see `GaussianBottleneck`).
    """

    def __init__(self, units, kl_weight=0.0, seed=None, scale_shift=_SCALE_SHIFT, max_scale=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"`units` must be a positive int, received units={units!r}.")
        if not kl_weight >= 0:
            raise ValueError(f"`kl_weight` must be >= 0, received kl_weight={kl_weight!r}.")
        self.units = units
        self.kl_weight = kl_weight
        self.seed = seed
        self.scale_shift = float(scale_shift)
        self.max_scale = max_scale
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape):
        in_dim = input_shape[-1]
        self.kernel_loc = self.add_weight(
            name="kernel_loc", shape=(in_dim, self.units), initializer="glorot_uniform"
        )
        self.kernel_pre_scale = self.add_weight(
            name="kernel_pre_scale", shape=(in_dim, self.units), initializer="zeros"
        )
        self.bias = self.add_weight(name="bias", shape=(self.units,), initializer="zeros")

    @property
    def kernel_scale(self):
        return bounded_scale(self.kernel_pre_scale, self.scale_shift, self.max_scale)

    def posterior_params(self):
        """Returns `(mu, sigma)` of q(W), each `(in, units)`."""
        return self.kernel_loc, self.kernel_scale

    def kernel_posterior(self):
        """q(W) as a TFP distribution over the flattened kernel `(in * units,)`."""
        loc = ops.reshape(ops.cast(self.kernel_loc, "float32"), (-1,))
        scale = ops.reshape(ops.cast(self.kernel_scale, "float32"), (-1,))
        return tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)

    def output_moments(self, inputs):
        """Mean and variance of the pre-activations, each `(..., units)`."""
        mean = ops.matmul(inputs, self.kernel_loc) + self.bias
        variance = ops.matmul(ops.square(inputs), ops.square(self.kernel_scale))
        return mean, variance

    def call(self, inputs, training=None):
        if self.kl_weight > 0:
            loc, scale = self.posterior_params()
            self.add_loss(self.kl_weight * kl_to_standard_normal(ops.reshape(loc, (-1,)), ops.reshape(scale, (-1,))))
        mean, variance = self.output_moments(inputs)
        if not training:
            return mean
        return reparameterized_sample(mean, ops.sqrt(variance), self.seed_generator)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "kl_weight": self.kl_weight, "seed": self.seed,
                "scale_shift": self.scale_shift, "max_scale": self.max_scale}
