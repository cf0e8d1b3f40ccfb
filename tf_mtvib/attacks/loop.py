"""The attack as data (an `Objective` and a `Threat`), one iterative loop
with a step rule per attack, and the `AttackCache` that owns compiled attacks.

Every attack here is `nb_iter` steps of
`x_{k+1} = Clip_range(x + Proj_eps(x_k + eps_iter * s(d_k) - x))`, where `s`
is sign (L-inf) or `d / ||d||_2` (L2) and the direction `d_k` comes from the
step rule: the gradient of `L_all` (PGD, Madry et al. 2018; FGSM is one
step of size eps from x, Goodfellow et al. 2015) or the momentum of
L1-normalised gradients (MIM, Dong et al. 2018, Eq. 6).
"""

import dataclasses

import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g


@dataclasses.dataclass(frozen=True)
class Threat:
    """The allowed inputs: the `norm`-ball of radius `eps` around x, inside
    `[clip_min, clip_max]` (either may be None: unbounded).

    `norm` is `np.inf` or `2`.
    """

    eps: float
    norm: float = np.inf
    clip_min: float = None
    clip_max: float = None

    def __post_init__(self):
        g.check_attack_args(None, self.eps, self.norm, self.clip_min, self.clip_max)

    def static_key(self):
        """The settings a compiled attack bakes in (eps is fed as a tensor)."""
        return (self.norm, self.clip_min, self.clip_max)


@dataclasses.dataclass(frozen=True)
class Objective:
    """What the attack ascends: `L_all = sum_c lambda_c L_c` over `tasks`
    (MTRobust Eq. 2), averaged over `eot_samples` forward passes.

    Args:
        tasks: attacked task name(s). Default value: every classification task.
        task_weights: lambda_c, a list or `{task: weight}`. Default value: 1/M
            each (MTRobust Eq. 5).
        eot_samples: forward passes the gradient is averaged over.
        stochastic: attack the sampled model of a MultiTaskVIB (one latent
            draw per pass) instead of its mean code.
        targeted: descend the loss of `y` instead of ascending it.
    """

    tasks: object = None
    task_weights: object = None
    eot_samples: int = 1
    stochastic: bool = False
    targeted: bool = False

    def __post_init__(self):
        if not isinstance(self.eot_samples, (int, np.integer)) or self.eot_samples < 1:
            raise ValueError(f"`eot_samples` must be a positive int, received eot_samples={self.eot_samples!r}.")

    def static_key(self, tasks, task_weights):
        return (tasks, task_weights, self.eot_samples, self.stochastic, self.targeted)


@dataclasses.dataclass(frozen=True)
class GradientStep:
    """PGD's and FGSM's direction: the gradient itself. `project=False` skips
    the projection onto the eps-ball, which a single step of size eps from x
    (FGSM) never leaves."""

    project: bool = True

    def initial_state(self, x):
        return ()

    def direction(self, gradient, state):
        return gradient, state


@dataclasses.dataclass(frozen=True)
class MomentumStep:
    """MIM's direction: `m <- decay * m + g / mean|g|` (per example), from m = 0."""

    decay: float = 1.0
    project: bool = True

    def __post_init__(self):
        if not self.decay >= 0:
            raise ValueError(f"`decay_factor` must be >= 0, received decay_factor={self.decay!r}.")

    def initial_state(self, x):
        return tf.zeros_like(x)

    def direction(self, gradient, momentum):
        axes = list(range(1, len(gradient.shape)))
        gradient /= tf.maximum(tf.reduce_mean(tf.abs(gradient), axes, keepdims=True), g._TINY)
        momentum = self.decay * momentum + gradient
        return momentum, momentum


def iterate(fn, x, labels, tasks, task_weights, kinds, objective, threat, eps, eps_iter, nb_iter, rule,
            start=None, final_loss=False):
    """The one attack loop (graph code; PGD, MIM, FGSM and adversarial training).

    Args:
        fn: `x -> {task: logits}`; x: `(batch, ...)`; labels: `{task: (batch,)}`.
        eps, eps_iter: tensors (so sweeps over eps reuse the trace); nb_iter: int.
        rule: a `GradientStep` or `MomentumStep`.
        start: offset the walk starts from, projected onto the ball and range;
            None starts at x itself.
        final_loss: also return the per-example `L_all` at the result (one more
            gradient evaluation; PGD keeps the best of its restarts by it).

    Returns:
        The adversarial x, or `(adversarial x, L_all (batch,))` with `final_loss`.
    """
    if start is None:
        adversarial = x
    else:
        adversarial = g.clip_to_range(x + g.project(start, eps, threat.norm), threat.clip_min, threat.clip_max)

    eot_samples = objective.eot_samples

    def move(adversarial, state, gradient):
        if objective.targeted:
            gradient = -gradient
        direction, state = rule.direction(gradient, state)
        adversarial = adversarial + g.optimal_perturbation(direction, eps_iter, threat.norm)
        if rule.project:
            adversarial = x + g.project(adversarial - x, eps, threat.norm)
        return g.clip_to_range(adversarial, threat.clip_min, threat.clip_max), state

    def step(k, adversarial, state, gradient_sum):
        gradient, _ = g.loss_gradient(fn, adversarial, labels, tasks, task_weights, kinds)
        if eot_samples == 1:
            return (k + 1, *move(adversarial, state, gradient), gradient_sum)
        # EOT: every pass of the loop adds one draw's gradient; each eot_samples-th moves along their mean.
        gradient_sum = gradient_sum + gradient
        adversarial, state, gradient_sum = tf.cond(
            (k + 1) % eot_samples == 0,
            lambda: (*move(adversarial, state, gradient_sum / eot_samples), tf.zeros_like(gradient_sum)),
            lambda: (adversarial, state, gradient_sum),
        )
        return k + 1, adversarial, state, gradient_sum

    # One flat loop of nb_iter x eot_samples model passes: the graph holds one copy of
    # the model whatever the two counts (a loop over the EOT passes nested in the
    # loop over the steps failed in TensorFlow 2.21's grappler at batch 500). The
    # EOT passes of a step do not depend on each other, so by default the loop would
    # run up to 10 of them at once, each with its own activations: one at a time
    # cut the peak memory of PGD with EOT 8 at batch 500 from 2,111 to 1,277 MiB.
    passes = nb_iter * eot_samples
    _, adversarial, _, _ = tf.while_loop(
        lambda k, *_: k < passes, step,
        (tf.constant(0), adversarial, rule.initial_state(x), tf.zeros_like(x) if eot_samples > 1 else ()),
        maximum_iterations=passes, parallel_iterations=1,
    )
    if not final_loss:
        return adversarial
    _, loss = g.loss_gradient(fn, adversarial, labels, tasks, task_weights, kinds, objective.eot_samples)
    return adversarial, loss


def sampling_key(model):
    """The model settings read when a call is traced (each bottleneck's
    `num_samples`), so that changing one retraces instead of serving a stale graph."""
    return tuple(getattr(b, "num_samples", None) for b in (getattr(model, "bottlenecks", None) or ()))


class AttackCache:
    """Compiled attacks (tf.functions), reused across batches and eps values.

    Pass one as `cache=` to the attacks to trace each attack once for a sweep;
    drop it (or call `clear`) to free the graphs and the models they hold.
    Entries are keyed by the model, the attack's static settings and the
    model's sampling settings (`sampling_key`), so a changed setting retraces.
    Without a cache every call compiles afresh.
    """

    def __init__(self):
        self._functions = {}

    def function(self, model, key, builder):
        """The tf.function `builder()` returns, built once per (model, key)."""
        full_key = (id(model), sampling_key(model), key)
        if full_key not in self._functions:
            # The model is held so that its id is not reused while the entry lives.
            self._functions[full_key] = (model, tf.function(builder(), reduce_retracing=True))
        return self._functions[full_key][1]

    def clear(self):
        self._functions.clear()

    def __len__(self):
        return len(self._functions)


def compiled(cache, model, key, builder):
    """`cache.function(...)`, or a fresh tf.function when `cache` is None."""
    if cache is None:
        return tf.function(builder(), reduce_retracing=True)
    return cache.function(model, key, builder)
