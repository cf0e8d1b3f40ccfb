"""Fast gradient method (Goodfellow et al. 2015; MTVIB Eq. 25) on one or several tasks."""

import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g


def fast_gradient_method(
    model_fn,
    x,
    y=None,
    eps=0.1,
    norm=np.inf,
    clip_min=None,
    clip_max=None,
    tasks=None,
    task_weights=None,
    targeted=False,
    eot_samples=1,
    stochastic=False,
):
    """`x' = clip(x + eps * sign(grad_x L_all))` (L-inf) or the L2 step `eps * g / ||g||`.

    Args:
        model_fn: a Keras multi-task model or a callable `x -> {task: logits}`.
        x: inputs `(batch, ...)`; never modified.
        y: `{task: labels (batch,)}`. Default value: the model's own predictions.
        eps: perturbation size; 0 returns x.
        norm: `np.inf` or `2`.
        clip_min, clip_max: the valid input range, e.g. 0 and 1.
        tasks: attacked task name(s). Default value: every classification
            task (one task = single-task attack, several = multitask attack).
        task_weights: lambda_c per attacked task. Default value: 1/M each (M attacked
            tasks; MTRobust Eq. 5).
        targeted: move towards `y` instead of away from it.
        eot_samples: forward passes the gradient is averaged over.
        stochastic: attack the sampled model of a MultiTaskVIB (one latent
            draw per pass) instead of its mean code.

    Returns:
        Adversarial examples, a tensor of the shape and dtype of `x`.
    """
    x = tf.convert_to_tensor(x)
    g.check_attack_args(x, eps, norm, clip_min, clip_max)
    fn, tasks, task_weights, labels, kinds = g.setup(model_fn, x, y, tasks, task_weights, stochastic)

    def build():
        def step(x, labels, eps):
            gradient, _ = g.loss_gradient(fn, x, labels, tasks, task_weights, kinds, eot_samples)
            if targeted:
                gradient = -gradient
            return g.clip_to_range(x + g.optimal_perturbation(gradient, eps, norm), clip_min, clip_max)

        return step

    key = ("fgm", tasks, task_weights, norm, clip_min, clip_max, targeted, eot_samples, stochastic)
    return g.compiled(model_fn, key, build)(x, labels, tf.constant(eps, x.dtype))
