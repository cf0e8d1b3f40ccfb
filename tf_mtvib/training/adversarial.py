"""Multitask adversarial training (MTRobust Sec. 5.5; Madry et al. 2018).

A `MultiTaskVIB` built with `adversarial=AdversarialTraining(...)` replaces
every training batch by attacks on the chosen task set before its ordinary
`train_step` (Madry et al.'s min-max training, as MTRobust Sec. 5.5 uses it);
`fraction < 1` keeps the rest of the batch clean (Goodfellow et al.'s mixed
objective). Everything else about `fit` stays as it is.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g
from tf_mtvib.attacks import loop

ATTACKS = ("pgd", "fgsm")


@keras.saving.register_keras_serializable(package="tf_mtvib")
class AdversarialTraining:
    """Settings and batch perturbation of adversarial training.

    Args:
        attack: 'pgd' (random start, `nb_iter` steps) or 'fgsm' (one step of eps).
        eps: L-inf (or L2) radius in input units. Default value: `0.1`.
        eps_iter: PGD step. Default value: `2.5 * eps / nb_iter`.
        nb_iter: PGD steps. Default value: `7`.
        fraction: share of each batch replaced by adversarial examples
            (the first rows). Default value: `1.0`, the whole batch.
        tasks: attacked task names. Default value: every classification task.
        task_weights: lambda_c of the attacked tasks. Default value: 1/M each.
        norm: `np.inf` or `2`.
        clip_min, clip_max: input range. Default value: `0.0`, `1.0`.
        seed: seed of the random starts.
    """

    def __init__(self, attack="pgd", eps=0.1, eps_iter=None, nb_iter=7, fraction=1.0, tasks=None,
                 task_weights=None, norm=np.inf, clip_min=0.0, clip_max=1.0, seed=None):
        if attack not in ATTACKS:
            raise ValueError(f"`attack` must be one of {ATTACKS}, received attack={attack!r}.")
        if not 0.0 < fraction <= 1.0:
            raise ValueError(f"`fraction` must lie in (0, 1], received fraction={fraction!r}.")
        if attack == "fgsm":
            nb_iter, eps_iter = 1, eps
        eps_iter = eps_iter if eps_iter is not None else min(eps, 2.5 * eps / nb_iter)
        g.check_attack_args(None, eps, norm, clip_min, clip_max, eps_iter, nb_iter)
        self.attack = attack
        self.eps = float(eps)
        self.eps_iter = float(eps_iter)
        self.nb_iter = int(nb_iter)
        self.fraction = float(fraction)
        self.tasks = list(tasks) if tasks is not None else None
        self.task_weights = list(task_weights) if task_weights is not None else None
        self.norm = norm
        self.clip_min = clip_min
        self.clip_max = clip_max
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def perturb_batch(self, model, x, y):
        """Returns `x` with its first `round(fraction * batch)` rows replaced by
        attacks on the model (inference mode) against their labels `y`."""
        tasks, weights = g.resolve_tasks(model, y, self.tasks, self.task_weights)
        kinds = g.task_kinds_of(model)
        batch = tf.shape(x)[0]
        count = tf.cast(tf.round(self.fraction * tf.cast(batch, tf.float32)), tf.int32)
        head = x[:count]
        labels = {t: tf.convert_to_tensor(y[t])[:count] for t in tasks}
        if self.attack == "pgd":
            start = g.random_start(tf.shape(head), self.eps, self.norm, g.seed_tensor(self.seed_generator), head.dtype)
        else:
            start = tf.zeros_like(head)
        threat = loop.Threat(self.eps, self.norm, self.clip_min, self.clip_max)
        adversarial = loop.iterate(
            g.model_callable(model), head, labels, tasks, weights, kinds, loop.Objective(), threat,
            self.eps, self.eps_iter, self.nb_iter, loop.GradientStep(), start=start,
        )
        return tf.concat([tf.stop_gradient(adversarial), x[count:]], axis=0)

    def get_config(self):
        return {
            "attack": self.attack, "eps": self.eps, "eps_iter": self.eps_iter, "nb_iter": self.nb_iter,
            "fraction": self.fraction, "tasks": self.tasks, "task_weights": self.task_weights,
            "norm": "inf" if self.norm == np.inf else self.norm, "clip_min": self.clip_min,
            "clip_max": self.clip_max, "seed": self.seed,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if config.get("norm") == "inf":
            config["norm"] = np.inf
        if config.get("attack") == "fgsm":
            config.pop("eps_iter", None)
            config.pop("nb_iter", None)
        return cls(**config)
