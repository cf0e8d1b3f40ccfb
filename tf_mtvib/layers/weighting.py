"""Combining per-task losses: learned uncertainty (UWL, MTVIB) or fixed weights (GS)."""

import keras
from keras import ops

from tf_mtvib.tasks import KINDS


def _stack_task_losses(task_losses, num_tasks):
    if isinstance(task_losses, (list, tuple)):
        task_losses = ops.stack([ops.convert_to_tensor(loss) for loss in task_losses])
    if task_losses.shape[-1] != num_tasks:
        raise ValueError(
            f"Expected {num_tasks} task losses, received shape {task_losses.shape}."
        )
    return task_losses


@keras.saving.register_keras_serializable(package="tf_mtvib")
class ValueRange(keras.constraints.Constraint):
    """Clips a weight into `[min_value, max_value]` after every update."""

    def __init__(self, min_value, max_value):
        if not min_value < max_value:
            raise ValueError(
                f"`min_value` must be below `max_value`, received "
                f"min_value={min_value!r}, max_value={max_value!r}."
            )
        self.min_value = min_value
        self.max_value = max_value

    def __call__(self, w):
        return ops.clip(w, self.min_value, self.max_value)

    def get_config(self):
        return {"min_value": self.min_value, "max_value": self.max_value}


@keras.saving.register_keras_serializable(package="tf_mtvib")
class UncertaintyWeighting(keras.layers.Layer):
    """Task losses weighted by learned homoscedastic uncertainty (MTVIB Eqs. 22-23).

    Holds one trainable `s_k = log sigma_k^2` per task, initialised at 0 and
    kept in `[-log_variance_bound, log_variance_bound]` by a constraint.
    Called on the K task losses (a list of scalars or a `(K,)` tensor), it
    returns the scalar

        sum_k exp(-s_k) * L_k + s_k / 2        for a classification task,
        sum_k exp(-s_k) * L_k / 2 + s_k / 2    for a regression task,

    i.e. `L_k / sigma_k^2 + log sigma_k` and `L_k / (2 sigma_k^2) + log sigma_k`.

    Args:
        task_kinds: list of "classification" / "regression", one per task.
        log_variance_bound: bound on |s_k|. Default value: `10.0`.
    """

    def __init__(self, task_kinds, log_variance_bound=10.0, **kwargs):
        super().__init__(**kwargs)
        task_kinds = list(task_kinds)
        bad = [k for k in task_kinds if k not in KINDS]
        if not task_kinds or bad:
            raise ValueError(
                f"`task_kinds` must be a non-empty list of {KINDS}, received "
                f"task_kinds={task_kinds!r}."
            )
        if not log_variance_bound > 0:
            raise ValueError(
                "`log_variance_bound` must be > 0, received "
                f"log_variance_bound={log_variance_bound!r}."
            )
        self.task_kinds = task_kinds
        self.log_variance_bound = log_variance_bound
        # Regression likelihoods carry the 1/2 of the Gaussian exponent.
        self._loss_scale = [1.0 if k == "classification" else 0.5 for k in task_kinds]

    def build(self, input_shape=None):
        self.log_variances = self.add_weight(
            name="log_variances",
            shape=(len(self.task_kinds),),
            initializer="zeros",
            constraint=ValueRange(-self.log_variance_bound, self.log_variance_bound),
        )

    @property
    def num_tasks(self):
        return len(self.task_kinds)

    @property
    def sigmas(self):
        """The learned sigma_k = exp(s_k / 2), shape `(K,)`."""
        return ops.exp(0.5 * ops.convert_to_tensor(self.log_variances))

    def call(self, task_losses):
        task_losses = _stack_task_losses(task_losses, len(self.task_kinds))
        log_var = ops.cast(self.log_variances, task_losses.dtype)
        scale = ops.convert_to_tensor(self._loss_scale, dtype=task_losses.dtype)
        return ops.sum(scale * ops.exp(-log_var) * task_losses + 0.5 * log_var)

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        return {
            **super().get_config(),
            "task_kinds": self.task_kinds,
            "log_variance_bound": self.log_variance_bound,
        }


@keras.saving.register_keras_serializable(package="tf_mtvib")
class FixedWeighting(keras.layers.Layer):
    """Task losses combined with fixed weights: `sum_k w_k * L_k`.

    GS searches a grid over `weights`; `weights=None` gives equal weights 1.

    Args:
        weights: list of K non-negative floats, or None.
        num_tasks: K, needed only when `weights` is None.
    """

    def __init__(self, weights=None, num_tasks=None, **kwargs):
        super().__init__(**kwargs)
        if weights is None:
            if not isinstance(num_tasks, int) or num_tasks < 1:
                raise ValueError(
                    "`num_tasks` must be a positive int when `weights` is None, "
                    f"received num_tasks={num_tasks!r}."
                )
            weights = [1.0] * num_tasks
        weights = [float(w) for w in weights]
        if not weights or any(not w >= 0 for w in weights):
            raise ValueError(
                f"`weights` must be non-negative floats, received weights={weights!r}."
            )
        if num_tasks is not None and num_tasks != len(weights):
            raise ValueError(
                f"`weights` has {len(weights)} entries but num_tasks={num_tasks}."
            )
        self.task_weights = weights
        self.num_tasks = len(weights)

    def call(self, task_losses):
        task_losses = _stack_task_losses(task_losses, self.num_tasks)
        weights = ops.convert_to_tensor(self.task_weights, dtype=task_losses.dtype)
        return ops.sum(weights * task_losses)

    def compute_output_shape(self, input_shape):
        return ()

    def get_config(self):
        return {
            **super().get_config(),
            "weights": self.task_weights,
            "num_tasks": self.num_tasks,
        }
