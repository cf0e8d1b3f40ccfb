"""Projected gradient descent (Madry et al. 2018; MTRobust Sec. 5) on one or several tasks."""

import keras
import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g


def pgd_iterations(fn, x, labels, eps, eps_iter, nb_iter, norm, clip_min, clip_max, tasks, task_weights,
                   kinds, targeted, eot_samples, start):
    """`nb_iter` projected steps from `x + start`; graph code shared by PGD and
    adversarial training. Returns `(adversarial x, per-example L_all at it)`."""
    adversarial = g.clip_to_range(x + g.project(start, eps, norm), clip_min, clip_max)
    for _ in range(nb_iter):
        gradient, _ = g.loss_gradient(fn, adversarial, labels, tasks, task_weights, kinds, eot_samples)
        if targeted:
            gradient = -gradient
        adversarial = adversarial + g.optimal_perturbation(gradient, eps_iter, norm)
        adversarial = g.clip_to_range(x + g.project(adversarial - x, eps, norm), clip_min, clip_max)
    _, loss = g.loss_gradient(fn, adversarial, labels, tasks, task_weights, kinds, eot_samples)
    return adversarial, loss


def projected_gradient_descent(
    model_fn,
    x,
    y=None,
    eps=0.3,
    eps_iter=0.01,
    nb_iter=40,
    norm=np.inf,
    clip_min=None,
    clip_max=None,
    rand_init=True,
    seed=None,
    restarts=1,
    tasks=None,
    task_weights=None,
    targeted=False,
    eot_samples=1,
    stochastic=False,
):
    """PGD: a random start in the eps-ball, then `nb_iter` steps of size
    `eps_iter` along the steepest ascent of L_all, each projected back onto the
    eps-ball and the input range.

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
    fn, tasks, task_weights, labels, kinds = g.setup(model_fn, x, y, tasks, task_weights, stochastic)
    seeds = keras.random.SeedGenerator(seed)

    def build():
        def attack(x, labels, eps, eps_iter, seed_pairs):
            best, best_loss = None, None
            for restart in range(restarts):
                start = (
                    g.random_start(tf.shape(x), eps, norm, seed_pairs[restart], x.dtype) if rand_init else tf.zeros_like(x)
                )
                candidate, loss = pgd_iterations(
                    fn, x, labels, eps, eps_iter, nb_iter, norm, clip_min, clip_max, tasks, task_weights,
                    kinds, targeted, eot_samples, start,
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

    key = ("pgd", tasks, task_weights, nb_iter, norm, clip_min, clip_max, rand_init, restarts, targeted, eot_samples, stochastic)
    seed_pairs = tf.stack([g.seed_tensor(seeds) for _ in range(restarts)])
    return g.compiled(model_fn, key, build)(
        x, labels, tf.constant(eps, x.dtype), tf.constant(eps_iter, x.dtype), seed_pairs
    )
