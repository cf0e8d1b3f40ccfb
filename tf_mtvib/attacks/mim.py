"""Momentum iterative method (Dong et al. 2018) on one or several tasks."""

import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g

_TINY = 1e-12


def momentum_iterative_method(
    model_fn,
    x,
    y=None,
    eps=0.3,
    eps_iter=0.06,
    nb_iter=10,
    norm=np.inf,
    decay_factor=1.0,
    clip_min=None,
    clip_max=None,
    tasks=None,
    task_weights=None,
    targeted=False,
    eot_samples=1,
    stochastic=False,
):
    """MIM: `m <- decay * m + g / mean|g|` (the L1-normalised gradient, per
    example), then a step of size `eps_iter` along m, projected onto the
    eps-ball and the input range; `decay_factor` 1.0 as CleverHans.

    Arguments as `projected_gradient_descent` (MIM starts from x).

    Returns:
        Adversarial examples shaped and typed like `x`.
    """
    x = tf.convert_to_tensor(x)
    g.check_attack_args(x, eps, norm, clip_min, clip_max, eps_iter, nb_iter)
    if not decay_factor >= 0:
        raise ValueError(f"`decay_factor` must be >= 0, received decay_factor={decay_factor!r}.")
    fn, tasks, task_weights, labels, kinds = g.setup(model_fn, x, y, tasks, task_weights, stochastic)
    axes = list(range(1, len(x.shape)))

    def build():
        def attack(x, labels, eps, eps_iter):
            momentum = tf.zeros_like(x)
            adversarial = x
            for _ in range(nb_iter):
                gradient, _ = g.loss_gradient(fn, adversarial, labels, tasks, task_weights, kinds, eot_samples)
                if targeted:
                    gradient = -gradient
                gradient /= tf.maximum(tf.reduce_mean(tf.abs(gradient), axes, keepdims=True), _TINY)
                momentum = decay_factor * momentum + gradient
                adversarial = adversarial + g.optimal_perturbation(momentum, eps_iter, norm)
                adversarial = g.clip_to_range(x + g.project(adversarial - x, eps, norm), clip_min, clip_max)
            return adversarial

        return attack

    key = ("mim", tasks, task_weights, nb_iter, norm, decay_factor, clip_min, clip_max, targeted, eot_samples, stochastic)
    return g.compiled(model_fn, key, build)(x, labels, tf.constant(eps, x.dtype), tf.constant(eps_iter, x.dtype))
