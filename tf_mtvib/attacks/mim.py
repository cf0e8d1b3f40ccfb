"""Momentum iterative method (Dong et al. 2018) on one or several tasks."""

import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g
from tf_mtvib.attacks import loop


def momentum_iterative_method(model_fn, x, eps=0.3, eps_iter=0.06, nb_iter=10, norm=np.inf, *, y=None,
                              decay_factor=1.0, clip_min=None, clip_max=None, tasks=None, task_weights=None,
                              targeted=False, eot_samples=1, stochastic=False, cache=None):
    """MIM: `m <- decay * m + g / mean|g|` (the L1-normalised gradient, per
    example), then a step of size `eps_iter` along m, projected onto the
    eps-ball and the input range; `decay_factor` 1.0 as CleverHans.

    Arguments after `(model_fn, x)` follow CleverHans (`eps, eps_iter, nb_iter,
    norm`); the rest are keyword-only, as `projected_gradient_descent` (MIM
    starts from x).

    Returns:
        Adversarial examples shaped and typed like `x`.
    """
    x = tf.convert_to_tensor(x)
    g.check_attack_args(x, eps, norm, clip_min, clip_max, eps_iter, nb_iter)
    rule = loop.MomentumStep(decay_factor)
    threat = loop.Threat(eps, norm, clip_min, clip_max)
    objective = loop.Objective(tasks, task_weights, eot_samples, stochastic, targeted)
    fn, tasks, task_weights, labels, kinds = g.setup(model_fn, x, y, tasks, task_weights, stochastic)

    def build():
        def attack(x, labels, eps, eps_iter):
            return loop.iterate(
                fn, x, labels, tasks, task_weights, kinds, objective, threat, eps, eps_iter, nb_iter, rule
            )

        return attack

    key = ("mim", objective.static_key(tasks, task_weights), threat.static_key(), nb_iter, rule)
    return loop.compiled(cache, model_fn, key, build)(
        x, labels, tf.constant(eps, x.dtype), tf.constant(eps_iter, x.dtype)
    )
