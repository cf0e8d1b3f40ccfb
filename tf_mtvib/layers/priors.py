"""Mixture priors built from the other tasks' posteriors (VMTL Eqs. 9-11) and
the two KLs to them: the Monte Carlo KL to the true mixture and the closed
form of the authors' code."""

import keras
import tensorflow as tf
import tensorflow_probability as tfp
from keras import ops

tfd = tfp.distributions


def kl_to_mixture(loc, scale, component_loc, component_scale, weights, num_samples, seed):
    """Monte Carlo `KL(N(loc, scale^2) || sum_k weights_k N(c_loc_k, c_scale_k^2))`.

    `(1/L) sum_l [log q(z_l) - log p(z_l)]` with `z_l ~ q` reparameterized, so
    it is differentiable in every argument (VMTL Eq. 13's KL terms, which have
    no closed form for a mixture).

    Args:
        loc, scale: `(batch, dim)` diagonal Gaussians q.
        component_loc, component_scale: `(batch, K, dim)` mixture components.
        weights: `(batch, K)` non-negative mixture weights summing to 1.
        num_samples: L.
        seed: a `keras.random.SeedGenerator` (or int).

    Returns:
        `(batch,)` KL estimates.
    """
    loc, scale = ops.cast(loc, "float32"), ops.cast(scale, "float32")
    posterior = tfd.Independent(tfd.Normal(loc, scale), reinterpreted_batch_ndims=1)
    prior = tfd.MixtureSameFamily(
        mixture_distribution=tfd.Categorical(probs=ops.cast(weights, "float32")),
        components_distribution=tfd.Independent(
            tfd.Normal(ops.cast(component_loc, "float32"), ops.cast(component_scale, "float32")),
            reinterpreted_batch_ndims=1,
        ),
    )
    noise = keras.random.normal((num_samples,) + tuple(ops.shape(loc)), seed=seed)
    samples = loc[None] + scale[None] * noise
    return ops.mean(posterior.log_prob(samples) - prior.log_prob(samples), axis=0)


def kl_to_weighted_sum(loc, scale, component_loc, component_scale, weights):
    """Closed-form `KL(N(loc, scale^2) || N(sum_k w_k c_loc_k, sum_k w_k^2 c_scale_k^2))`.

    The prior here is the law of `sum_k w_k z_k` for independent
    `z_k ~ N(c_loc_k, c_scale_k^2)`, the Gaussian the VMTL authors' code puts
    in place of the mixture of Eqs. 9 and 11 so that the KL has a closed form
    (the paper, Sec. 2.4: "the KL terms can be computed in closed forms"). It
    is not the mixture: with weights 1/K it is narrower than every component.

    Args:
        loc, scale: `(batch, dim)` diagonal Gaussians q.
        component_loc, component_scale: `(batch, K, dim)`.
        weights: `(batch, K)` mixing weights.

    Returns:
        `(batch,)` KLs, summed over `dim`.
    """
    weights = ops.cast(weights, "float32")[..., None]
    prior_loc = ops.sum(weights * ops.cast(component_loc, "float32"), axis=-2)
    prior_scale = ops.sqrt(ops.sum(ops.square(weights * ops.cast(component_scale, "float32")), axis=-2))
    posterior = tfd.Independent(tfd.Normal(ops.cast(loc, "float32"), ops.cast(scale, "float32")), 1)
    return tfd.kl_divergence(posterior, tfd.Independent(tfd.Normal(prior_loc, prior_scale), 1))


MIXTURE_KL_KINDS = ("monte-carlo", "closed-form")


def other_tasks(num_tasks):
    """`(T, T-1)` int indices: row t lists the tasks i != t in order."""
    return tf.constant([[i for i in range(num_tasks) if i != t] for t in range(num_tasks)], tf.int32)


@keras.saving.register_keras_serializable(package="tf_mtvib")
class GumbelSoftmaxMixturePrior(keras.layers.Layer):
    """Mixing weights of task t's prior over the other tasks' posteriors
    (VMTL Eqs. 9-11): p_t = sum_{i != t} A_ti q_i / sum_{i != t} A_ti.

    A_ti is the binary Gumbel-softmax (a TFP `RelaxedBernoulli`) with learned
    probability pi_ti = sigmoid(logit_ti) that tasks t and i are related
    and temperature tau (Eq. 10): it lies in (0, 1) and tends to a hard 0 / 1
    as tau falls. The paper's mixture is not normalized; we divide by the sum
    of the A_ti so that the prior is a density and its KL is a KL.

    `call(inputs, training)` returns the `(T, T-1)` normalized weights,
    column j of row t being task `other_tasks(T)[t, j]`; with `training`
    falsy, the weights use pi instead of a relaxed sample. The temperature is
    a non-trainable variable so that `TemperatureAnnealing` can lower it.

    Args:
        num_tasks: T >= 2.
        temperature: initial tau. Default value: `1.0`.
        seed: int seed of the Gumbel noise.
    """

    def __init__(self, num_tasks, temperature=1.0, seed=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_tasks, int) or num_tasks < 2:
            raise ValueError(f"`num_tasks` must be an int >= 2, received num_tasks={num_tasks!r}.")
        if not temperature > 0:
            raise ValueError(f"`temperature` must be > 0, received temperature={temperature!r}.")
        self.num_tasks = num_tasks
        self.initial_temperature = float(temperature)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def build(self, input_shape=None):
        self.relatedness_logits = self.add_weight(
            name="relatedness_logits", shape=(self.num_tasks, self.num_tasks - 1), initializer="zeros"
        )
        self.temperature = self.add_weight(
            name="temperature",
            shape=(),
            initializer=keras.initializers.Constant(self.initial_temperature),
            trainable=False,
        )

    def relatedness(self):
        """pi_ti, `(T, T-1)`: the learned probability that t and i are related."""
        return ops.sigmoid(ops.cast(self.relatedness_logits, "float32"))

    def relaxed_weights(self):
        """One draw of the relaxed A_ti of Eq. 10, `(T, T-1)` in (0, 1)."""
        seed = ops.cast(keras.random.randint((2,), 0, 2**30, seed=self.seed_generator), "int32")
        # float32 whatever the dtype policy: TFP wants one dtype, and these are probabilities.
        logits = ops.cast(self.relatedness_logits, "float32")
        relaxed = tfd.RelaxedBernoulli(ops.cast(self.temperature, "float32"), logits=logits)
        return relaxed.sample(seed=seed)

    def call(self, inputs=None, training=None):
        weights = self.relaxed_weights() if training else self.relatedness()
        weights = ops.maximum(weights, 1e-12)
        return weights / ops.sum(weights, axis=-1, keepdims=True)

    def get_config(self):
        return {
            **super().get_config(),
            "num_tasks": self.num_tasks,
            "temperature": self.initial_temperature,
            "seed": self.seed,
        }


@keras.saving.register_keras_serializable(package="tf_mtvib")
class LearnedWeightsMixturePrior(GumbelSoftmaxMixturePrior):
    """Ablation 'learned-weights' (VMTL Table 2): softmax of learned logits,
    no Gumbel noise and no temperature."""

    def call(self, inputs=None, training=None):
        return ops.softmax(ops.cast(self.relatedness_logits, "float32"), axis=-1)


@keras.saving.register_keras_serializable(package="tf_mtvib")
class MeanMixturePrior(GumbelSoftmaxMixturePrior):
    """Ablation 'mean' (VMTL Table 2): equal weights 1 / (T - 1)."""

    def call(self, inputs=None, training=None):
        return ops.ones((self.num_tasks, self.num_tasks - 1)) / (self.num_tasks - 1)


PRIORS = {"gumbel": GumbelSoftmaxMixturePrior, "learned-weights": LearnedWeightsMixturePrior, "mean": MeanMixturePrior}


def mixture_prior(kind, num_tasks, **kwargs):
    """The mixing-weight layer for `kind` in 'gumbel', 'learned-weights', 'mean'."""
    if kind not in PRIORS:
        raise ValueError(f"`prior` must be one of {tuple(PRIORS)}, received prior={kind!r}.")
    return PRIORS[kind](num_tasks, **kwargs)
