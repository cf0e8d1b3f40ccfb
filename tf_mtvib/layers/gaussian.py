"""Diagonal-Gaussian helpers the stochastic layers and models share.

One home for the bounded scale, the reparameterized sample and the KL to
N(0, I), so that GaussianBottleneck, BayesianDense, AmortizedClassifier and
VMTL parameterize and penalize their Gaussians the same way.
"""

import keras
import tensorflow_probability as tfp
from keras import ops

tfd = tfp.distributions

# Keeps every sigma strictly positive, so log-densities and KLs stay finite.
MIN_SCALE = 1e-6


def bounded_scale(pre_scale, shift, max_scale=None):
    """`sigma = softplus(pre_scale - shift) + 1e-6`, capped at `max_scale`.

    Never the exp of an unbounded log-variance: sigma grows linearly, not
    exponentially, in `pre_scale`, and a zero-initialised `pre_scale` starts
    at `softplus(-shift)`. Same shape as `pre_scale`.
    """
    scale = ops.softplus(pre_scale - shift) + MIN_SCALE
    return scale if max_scale is None else ops.minimum(scale, max_scale)


def reparameterized_sample(loc, scale, seed, sample_shape=()):
    """`loc + scale * eps`, `eps ~ N(0, I)`: shape `sample_shape + loc.shape`.

    `seed` is a `keras.random.SeedGenerator` (or an int / `None`).
    """
    noise = keras.random.normal(tuple(sample_shape) + tuple(ops.shape(loc)), dtype=loc.dtype, seed=seed)
    return loc + scale * noise


def kl_to_standard_normal(loc, scale):
    """`KL(N(loc, diag(scale^2)) || N(0, I))` summed over the last axis (closed form, TFP).

    Shape `loc.shape[:-1]`; computed in float32 whatever the inputs' dtype.
    """
    loc = ops.cast(loc, "float32")
    scale = ops.cast(scale, "float32")
    posterior = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)
    prior = tfd.Independent(tfd.Normal(ops.zeros_like(loc), ops.ones_like(scale)), reinterpreted_batch_ndims=1)
    return tfd.kl_divergence(posterior, prior)
