"""keras-tuner HyperModels for MTVIB and for GS (the grid over fixed task weights).

    hypermodel = MTVIBHyperModel(tasks, input_shape=(36, 36, 1))
    tuner = make_tuner(hypermodel, "random", objective="joint", max_trials=10,
                       directory="runs/tune", project_name="mtvib")
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), epochs=5)

The objective is the clean joint accuracy on the validation data
(`val_joint_accuracy`) or, with `objective="robust"`, the joint accuracy
under an FGSM attack on all tasks at `robust_eps` (`val_robust_joint_accuracy`,
computed after every epoch by `RobustAccuracy`).
"""

import itertools
import os

import keras
import keras_tuner
import numpy as np

from tf_mtvib.models.systems import build_model
from tf_mtvib.tasks import as_tasks

OBJECTIVES = {"joint": "val_joint_accuracy", "robust": "val_robust_joint_accuracy"}
TUNERS = ("random", "hyperband", "bayesian", "grid")
# Convex weights of the first task for two-task GS (the second gets 1 - w).
GS_GRID = (0.1, 0.3, 0.5, 0.7, 0.9)


class RobustAccuracy(keras.callbacks.Callback):
    """Adds `val_robust_joint_accuracy` (and per task `val_robust_<task>_accuracy`)
    to the epoch logs: accuracy on FGSM examples at `eps` against all tasks."""

    def __init__(self, x, y, eps=0.1, batch_size=500):
        super().__init__()
        self.x, self.y, self.eps, self.batch_size = x, y, eps, batch_size
        self.attack_cache = None  # made on first use: the attack is traced once per model, not per epoch

    def on_epoch_end(self, epoch, logs=None):
        from tf_mtvib.attacks import AttackCache, adversarial_accuracy

        if self.attack_cache is None:
            self.attack_cache = AttackCache()
        result = adversarial_accuracy(self.model, self.x, self.y, "fgsm", self.eps, batch_size=self.batch_size,
                                      cache=self.attack_cache)
        if logs is not None:
            for name, value in result.items():
                logs["val_robust_joint_accuracy" if name == "joint" else f"val_robust_{name}_accuracy"] = value


class _MultiTaskHyperModel(keras_tuner.HyperModel):
    def __init__(self, tasks, input_shape, objective="joint", robust_eps=0.1, seed=0, name=None):
        super().__init__(name=name)
        if objective not in OBJECTIVES:
            raise ValueError(f"`objective` must be one of {tuple(OBJECTIVES)}, received objective={objective!r}.")
        if not robust_eps > 0:
            raise ValueError(f"`robust_eps` must be > 0, received robust_eps={robust_eps!r}.")
        self.tasks = as_tasks(tasks)
        self.input_shape = tuple(input_shape)
        self.objective = objective
        self.robust_eps = robust_eps
        self.seed = seed

    @property
    def objective_name(self):
        return OBJECTIVES[self.objective]

    def _compile(self, model, learning_rate):
        model.compile(optimizer=keras.optimizers.Adam(learning_rate))
        return model

    def fit(self, hp, model, x, y=None, validation_data=None, callbacks=None, **kwargs):
        callbacks = list(callbacks or [])
        if self.objective == "robust":
            if not (isinstance(validation_data, tuple) and len(validation_data) == 2):
                raise ValueError(
                    "objective='robust' needs `validation_data=(x_val, y_val)` as arrays, received "
                    f"{type(validation_data).__name__}."
                )
            # First, so that the tuner's own callbacks see the value in the logs.
            callbacks.insert(0, RobustAccuracy(*validation_data, eps=self.robust_eps))
        return model.fit(x, y, validation_data=validation_data, callbacks=callbacks, **kwargs)


class MTVIBHyperModel(_MultiTaskHyperModel):
    """MTVIB over beta (log-uniform), latent size, learning rate (log-uniform)
    and the task weighting ('uncertainty' learned weights or 'fixed' equal ones).

    Args:
        tasks: list of `Task`; input_shape: `(H, W, C)`.
        objective: 'joint' (clean) or 'robust' (FGSM at `robust_eps`).
        beta_range, learning_rate_range: `(min, max)`, searched log-uniformly.
        latent_dims: choices of the latent dimension.
        weightings: choices among 'uncertainty' and 'fixed'.
    """

    def __init__(
        self,
        tasks,
        input_shape,
        objective="joint",
        robust_eps=0.1,
        beta_range=(1e-5, 1e-1),
        latent_dims=(64, 128, 256),
        learning_rate_range=(1e-5, 1e-3),
        weightings=("uncertainty", "fixed"),
        seed=0,
        name="mtvib",
    ):
        super().__init__(tasks, input_shape, objective, robust_eps, seed, name)
        for arg, value in (("beta_range", beta_range), ("learning_rate_range", learning_rate_range)):
            if not (len(value) == 2 and 0 < value[0] < value[1]):
                raise ValueError(f"`{arg}` must be (min, max) with 0 < min < max, received {arg}={value!r}.")
        self.beta_range = tuple(beta_range)
        self.latent_dims = tuple(latent_dims)
        self.learning_rate_range = tuple(learning_rate_range)
        self.weightings = tuple(weightings)

    def build(self, hp):
        beta = hp.Float("beta", *self.beta_range, sampling="log")
        latent_dim = hp.Choice("latent_dim", list(self.latent_dims))
        learning_rate = hp.Float("learning_rate", *self.learning_rate_range, sampling="log")
        weighting = hp.Choice("weighting", list(self.weightings))
        model = build_model(
            "mtvib", self.tasks, input_shape=self.input_shape, latent_dim=int(latent_dim), beta=beta,
            weighting=weighting, seed=self.seed,
        )
        return self._compile(model, learning_rate)


class GSHyperModel(_MultiTaskHyperModel):
    """GS (shared Small AlexNet, fixed task weights) over a grid of task weights.

    With two tasks the grid is the convex pairs `(w, 1 - w)`, `w` in `grid`;
    with more, every task's weight is chosen from `grid`. Use it with the
    'grid' tuner to visit every combination.
    """

    def __init__(self, tasks, input_shape, objective="joint", robust_eps=0.1, grid=GS_GRID,
                 learning_rate=1e-4, seed=0, name="gs"):
        super().__init__(tasks, input_shape, objective, robust_eps, seed, name)
        grid = tuple(float(w) for w in grid)
        if not grid or any(not 0 <= w <= 1 for w in grid) or (len(self.tasks) == 2 and any(w in (0, 1) for w in grid)):
            raise ValueError(f"`grid` must hold weights in (0, 1), received grid={grid!r}.")
        self.grid = grid
        self.learning_rate = learning_rate

    def task_weights(self, hp):
        names = [t.name for t in self.tasks]
        if len(names) == 2:
            w = hp.Choice(f"weight_{names[0]}", list(self.grid))
            return [w, 1.0 - w]
        return [hp.Choice(f"weight_{n}", list(self.grid)) for n in names]

    def all_weights(self):
        """Every weight vector of the grid, in the grid tuner's order."""
        if len(self.tasks) == 2:
            return [[w, 1.0 - w] for w in self.grid]
        return [list(c) for c in itertools.product(self.grid, repeat=len(self.tasks))]

    def build(self, hp):
        model = build_model(
            "gs", self.tasks, input_shape=self.input_shape, task_weights=self.task_weights(hp), seed=self.seed
        )
        return self._compile(model, self.learning_rate)


def search_role():
    """This process's part in a distributed keras-tuner search, read from
    keras-tuner's own environment variables (the rule of keras-tuner's
    private `distribute.utils.has_chief_oracle` / `is_chief_oracle`, which
    raise RuntimeError; here a missing variable is a ValueError naming it):

    - `None`: no `KERASTUNER_ORACLE_IP`, a search in one process;
    - `"chief"`: `KERASTUNER_TUNER_ID` contains 'chief': serves the oracle at
      `KERASTUNER_ORACLE_IP:KERASTUNER_ORACLE_PORT`, runs no trial, and after
      the last trial holds the results;
    - `"worker"`: any other `KERASTUNER_TUNER_ID` ('tuner0', ...): asks the
      chief for trials and runs them until none is left.

    Every process must be given the same search folder (shared storage):
    workers write the trials' checkpoints, the chief reads them.
    """
    if "KERASTUNER_ORACLE_IP" not in os.environ:
        return None
    for name in ("KERASTUNER_ORACLE_PORT", "KERASTUNER_TUNER_ID"):
        if not os.environ.get(name):
            raise ValueError(
                f"KERASTUNER_ORACLE_IP={os.environ['KERASTUNER_ORACLE_IP']!r} asks for a distributed search, "
                f"which also needs {name} (received {os.environ.get(name)!r})."
            )
    return "chief" if "chief" in os.environ["KERASTUNER_TUNER_ID"] else "worker"


def make_tuner(hypermodel, tuner="random", max_trials=10, directory="runs/tune", project_name=None,
               overwrite=False, max_epochs=10, seed=0, **kwargs):
    """A keras-tuner tuner maximizing the hypermodel's objective.

    Args:
        tuner: 'random', 'hyperband' (`max_epochs` per bracket),
            'bayesian' or 'grid'.
        directory, project_name: where trials are stored; a search started
            again with `overwrite=False` resumes from there.
    """
    if tuner not in TUNERS:
        raise ValueError(f"`tuner` must be one of {TUNERS}, received tuner={tuner!r}.")
    objective = keras_tuner.Objective(hypermodel.objective_name, direction="max")
    common = dict(
        objective=objective, directory=directory, project_name=project_name or hypermodel.name,
        overwrite=overwrite, seed=seed, **kwargs,
    )
    if tuner == "hyperband":
        return keras_tuner.Hyperband(hypermodel, max_epochs=max_epochs, **common)
    classes = {"random": keras_tuner.RandomSearch, "bayesian": keras_tuner.BayesianOptimization,
               "grid": keras_tuner.GridSearch}
    return classes[tuner](hypermodel, max_trials=max_trials, **common)


def best_trial_summary(tuner, num_trials=1):
    """`[{"trial_id", "score", "hyperparameters"}]` of the best trials."""
    return [
        {
            "trial_id": t.trial_id,
            "score": None if t.score is None else float(t.score),
            "hyperparameters": {
                k: (v.item() if isinstance(v, np.generic) else v) for k, v in t.hyperparameters.values.items()
            },
        }
        for t in tuner.oracle.get_best_trials(num_trials)
    ]
