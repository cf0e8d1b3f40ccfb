"""Projected gradient descent (Madry et al. 2018; MTRobust Sec. 5) on one or several tasks."""

import keras
import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g
from tf_mtvib.attacks import loop


def projected_gradient_descent(model_fn, x, eps=0.3, eps_iter=0.01, nb_iter=40, norm=np.inf, *, y=None,
                               clip_min=None, clip_max=None, rand_init=True, seed=None, restarts=1, tasks=None,
                               task_weights=None, targeted=False, eot_samples=1, stochastic=False, cache=None):
    """PGD: a random start in the eps-ball, then `nb_iter` steps of size
    `eps_iter` along the steepest ascent of L_all, each projected back onto the
    eps-ball and the input range.

    Arguments after `(model_fn, x)` follow CleverHans (`eps, eps_iter,
    nb_iter, norm`); the rest are keyword-only.

    Args:
        eps_iter: step size, at most eps.
        nb_iter: number of steps.
        rand_init: start from a uniform draw in the eps-ball (else from x).
        seed: seed of the random starts; the same seed repeats the attack.
        restarts: random starts; per example the one with the highest loss
            (lowest for a targeted attack) is kept.
        Other arguments as `fast_gradient_method`.

    Returns:
        Adversarial examples shaped and typed like `x`.
    """
    x = tf.convert_to_tensor(x)
    g.check_attack_args(x, eps, norm, clip_min, clip_max, eps_iter, nb_iter)
    if not isinstance(restarts, int) or restarts < 1:
        raise ValueError(f"`restarts` must be a positive int, received restarts={restarts!r}.")
    threat = loop.Threat(eps, norm, clip_min, clip_max)
    objective = loop.Objective(tasks, task_weights, eot_samples, stochastic, targeted)
    fn, tasks, task_weights, labels, kinds = g.setup(model_fn, x, y, tasks, task_weights, stochastic)
    rule = loop.GradientStep()
    seeds = keras.random.SeedGenerator(seed)

    def build():
        def attack(x, labels, eps, eps_iter, seed_pairs):
            best, best_loss = None, None
            for restart in range(restarts):
                start = (
                    g.random_start(tf.shape(x), eps, norm, seed_pairs[restart], x.dtype)
                    if rand_init
                    else tf.zeros_like(x)
                )
                if restarts == 1:  # no restart to compare with: skip the final loss evaluation
                    return loop.iterate(fn, x, labels, tasks, task_weights, kinds, objective, threat, eps, eps_iter,
                                        nb_iter, rule, start=start)
                candidate, loss = loop.iterate(
                    fn, x, labels, tasks, task_weights, kinds, objective, threat, eps, eps_iter, nb_iter, rule,
                    start=start, final_loss=True,
                )
                if best is None:
                    best, best_loss = candidate, loss
                else:
                    better = loss < best_loss if targeted else loss > best_loss
                    mask = tf.reshape(better, [-1] + [1] * (len(x.shape) - 1))
                    best = tf.where(mask, candidate, best)
                    best_loss = tf.where(better, loss, best_loss)
            return best

        return attack

    key = ("pgd", objective.static_key(tasks, task_weights), threat.static_key(), nb_iter, rand_init, restarts)
    seed_pairs = tf.stack([g.seed_tensor(seeds) for _ in range(restarts)])
    return loop.compiled(cache, model_fn, key, build)(
        x, labels, tf.constant(eps, x.dtype), tf.constant(eps_iter, x.dtype), seed_pairs
    )
