"""Fast gradient method (Goodfellow et al. 2015; MTVIB Eq. 25) on one or several tasks."""

import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g
from tf_mtvib.attacks import loop


def fast_gradient_method(model_fn, x, eps=0.1, norm=np.inf, *, y=None, clip_min=None, clip_max=None, tasks=None,
                         task_weights=None, targeted=False, eot_samples=1, stochastic=False, cache=None):
    """`x' = clip(x + eps * sign(grad_x L_all))` (L-inf) or the L2 step `eps * g / ||g||`:
    one step of the attack loop from x, without random start.

    Arguments after `(model_fn, x)` follow CleverHans (`eps, norm`); the rest are keyword-only.

    Args:
        model_fn: a Keras multi-task model or a callable `x -> {task: logits}`.
        x: inputs `(batch, ...)`; never modified.
        eps: perturbation size; 0 returns x.
        norm: `np.inf` or `2`.
        y: `{task: labels (batch,)}`. Default value: the model's own predictions.
        clip_min, clip_max: the valid input range, e.g. 0 and 1.
        tasks, task_weights, targeted, eot_samples, stochastic: the `loop.Objective`.
        cache: a `loop.AttackCache` to reuse the compiled attack; None compiles afresh.

    Returns:
        Adversarial examples, a tensor of the shape and dtype of `x`.
    """
    x = tf.convert_to_tensor(x)
    g.check_attack_args(x, eps, norm, clip_min, clip_max)
    threat = loop.Threat(eps, norm, clip_min, clip_max)
    objective = loop.Objective(tasks, task_weights, eot_samples, stochastic, targeted)
    fn, tasks, task_weights, labels, kinds = g.setup(model_fn, x, y, tasks, task_weights, stochastic)
    rule = loop.GradientStep(project=False)

    def build():
        def step(x, labels, eps):
            return loop.iterate(fn, x, labels, tasks, task_weights, kinds, objective, threat, eps, eps, 1, rule)

        return step

    key = ("fgm", objective.static_key(tasks, task_weights), threat.static_key())
    return loop.compiled(cache, model_fn, key, build)(x, labels, tf.constant(eps, x.dtype))
