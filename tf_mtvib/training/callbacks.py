"""Callbacks for training runs."""

import math
import os
import time
import zipfile

import keras

from tf_mtvib.data import atomic


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (weights and optimizer state) at the end of
    epochs, atomically, so that an interrupted run continues where it stopped.

    The folder holds `model.keras` and `state.json` (`{"epoch": completed
    epochs, "history": {...}}`); `EpochCheckpoint.restore(folder)` returns the
    compiled model and the state, or `(None, None)` when there is none.

    Args:
        folder: where the checkpoint goes.
        history: logs of the epochs before this `fit` (from a restored state).
        min_interval: seconds that must pass since the last save before an
            epoch is saved again; the last epoch of `fit` is always saved.
            Default value: `0.0`, every epoch. For many short epochs
            (saving a model takes ~0.2 s on a CPU) a few seconds bound the cost.
    """

    def __init__(self, folder, history=None, min_interval=0.0):
        super().__init__()
        if not min_interval >= 0:
            raise ValueError(f"`min_interval` must be >= 0 seconds, received min_interval={min_interval!r}.")
        self.folder = folder
        self.history = {k: list(v) for k, v in (history or {}).items()}
        self.min_interval = min_interval
        self.last_save = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        last_epoch = epoch + 1 == self.params.get("epochs")
        if not last_epoch and time.monotonic() - self.last_save < self.min_interval:
            return
        os.makedirs(self.folder, exist_ok=True)
        with atomic.atomic_path(os.path.join(self.folder, "model.keras"), suffix=".keras") as tmp:
            self.model.save(tmp)
        atomic.write_json(os.path.join(self.folder, "state.json"), {"epoch": epoch + 1, "history": self.history})
        self.last_save = time.monotonic()

    @staticmethod
    def restore(folder, remedy="delete the folder to start again"):
        """`(model, state)` of the checkpoint in `folder`, `(None, None)` when
        there is none; a damaged file raises ValueError naming it and `remedy`."""
        state_path = os.path.join(folder, "state.json")
        model_path = os.path.join(folder, "model.keras")
        if not (os.path.isfile(state_path) and os.path.isfile(model_path)):
            return None, None
        state = atomic.read_json(state_path, remedy)
        return load_model_file(model_path, remedy), state


def load_model_file(path, remedy):
    """`keras.models.load_model(path)` (safe mode) with errors that name the
    file: a truncated or corrupt archive, or a model that safe mode refuses
    (a Lambda layer, an unregistered class). `remedy` says what the user can do."""
    try:
        return keras.models.load_model(path)
    except Exception as error:  # Keras raises many types for a bad archive
        try:
            with zipfile.ZipFile(path) as archive:
                intact = archive.testzip() is None
        except (zipfile.BadZipFile, OSError):
            intact = False
        if not intact:
            raise ValueError(f"{path} is damaged (truncated or not a .keras archive); {remedy}.") from None
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(
            f"{path} holds a model that Keras safe mode will not load ({reason}): tf-mtvib loads only "
            "models built from its own registered layers, never code (such as a Lambda layer's function) "
            f"stored in the file; {remedy}."
        ) from error


class TrainingDiverged(ArithmeticError):
    """Raised by `StopOnNonFiniteLoss`; `epoch` and `step` count from 1."""

    def __init__(self, message, epoch, step=None):
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Stops training at the first step whose loss is NaN or Inf, and after an
    epoch whose validation loss is, by raising `TrainingDiverged`. Keras'
    `TerminateOnNaN(raise_error=True)` also stops at the step; this one adds
    the validation-loss check and a message naming the epoch, the step and
    the likely cause (the learning rate), which the CLI prints. List it before
    checkpointing callbacks, so that no diverged weights are saved."""

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def _stop_if_not_finite(self, loss, where, epoch, step=None):
        if loss is None or math.isfinite(float(loss)):
            return
        rate = getattr(getattr(self.model, "optimizer", None), "learning_rate", None)
        rate = f" ({float(keras.ops.convert_to_numpy(rate)):g})" if rate is not None else ""
        raise TrainingDiverged(
            f"training diverged: the {where} is {float(loss)}; the likely cause is a learning rate{rate} too "
            "large for the model, or inputs and targets far outside the range the model was made for; "
            "lower the learning rate.",
            epoch, step,
        )

    def on_train_batch_end(self, batch, logs=None):
        where = f"loss at epoch {self.epoch + 1}, step {batch + 1}"
        self._stop_if_not_finite((logs or {}).get("loss"), where, self.epoch + 1, batch + 1)

    def on_epoch_end(self, epoch, logs=None):
        where = f"validation loss after epoch {epoch + 1}"
        self._stop_if_not_finite((logs or {}).get("val_loss"), where, epoch + 1)


@keras.saving.register_keras_serializable(package="tf_mtvib")
class KLAnnealing(keras.callbacks.Callback):
    """Linear warm-up of a model's KL weights: each weight is set to
    `final * min(1, step / warmup_steps)` at every training step, with step
    the optimizer's iteration count (so a resumed run continues the ramp).

    Works for every model with `kl_weights()`: a `MultiTaskVIB` with a
    bottleneck (MTVIB, STVIB; the weight is beta, Eq. 10) and the VMTL
    models (the weight of both KLs of Eq. 13). VMTL anneals by itself at the
    paper's rate (`kl_anneal_rate`, 1e-6 per step); this callback is for a
    different schedule and needs a VMTL model built with `kl_anneal_rate=0`.

    Args:
        warmup_steps: steps until the weights reach `final`.
        final: the weight after warm-up. Default value: `None`, each weight's
            own full value (a bottleneck's `beta`, VMTL's `kl_weight`).
    """

    def __init__(self, warmup_steps, final=None):
        super().__init__()
        if not isinstance(warmup_steps, int) or warmup_steps < 1:
            raise ValueError(f"`warmup_steps` must be a positive int, received warmup_steps={warmup_steps!r}.")
        if final is not None and not final >= 0:
            raise ValueError(f"`final` must be >= 0, received final={final!r}.")
        self.warmup_steps = warmup_steps
        self.final = None if final is None else float(final)

    def value(self, step, full_value=1.0):
        final = full_value if self.final is None else self.final
        return final * min(1.0, step / self.warmup_steps)

    def on_train_begin(self, logs=None):
        if getattr(self.model, "kl_anneal_rate", 0) > 0:
            raise ValueError(
                "KLAnnealing sets the KL weight step by step, but the model anneals it itself "
                f"(kl_anneal_rate={self.model.kl_anneal_rate}); build the model with kl_anneal_rate=0."
            )
        weights = self.model.kl_weights() if hasattr(self.model, "kl_weights") else []
        if not weights:
            raise ValueError(
                f"KLAnnealing needs a model with a KL term; {self.model.name} has none "
                "(a MultiTaskVIB without bottleneck, or a deterministic multi-domain classifier)."
            )

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        for variable, full_value in self.model.kl_weights():
            variable.assign(self.value(step, full_value))

    def get_config(self):
        return {"warmup_steps": self.warmup_steps, "final": self.final}


@keras.saving.register_keras_serializable(package="tf_mtvib")
class TemperatureAnnealing(keras.callbacks.Callback):
    """Exponential decay of the Gumbel-softmax temperature of every
    `GumbelSoftmaxMixturePrior` in the model: `max(floor, initial * rate^step)`
    per training step; logged as `temperature` at the end of each epoch.

    Args:
        initial: tau at step 0. Default value: `1.0`.
        rate: decay per step, in (0, 1]. Default value: `0.999`.
        floor: smallest tau. Default value: `0.5`.
    """

    def __init__(self, initial=1.0, rate=0.999, floor=0.5):
        super().__init__()
        if not (initial > 0 and 0 < rate <= 1 and 0 < floor <= initial):
            raise ValueError(
                "TemperatureAnnealing needs initial > 0, 0 < rate <= 1 and 0 < floor <= initial, received "
                f"initial={initial!r}, rate={rate!r}, floor={floor!r}."
            )
        self.initial, self.rate, self.floor = float(initial), float(rate), float(floor)

    def value(self, step):
        return max(self.floor, self.initial * self.rate**step)

    def _priors(self):
        from tf_mtvib.layers.priors import GumbelSoftmaxMixturePrior

        return [layer for layer in self.model._flatten_layers() if isinstance(layer, GumbelSoftmaxMixturePrior)]

    def on_train_begin(self, logs=None):
        self.priors = self._priors()

    def on_train_batch_begin(self, batch, logs=None):
        # The optimizer's step count: a resumed run continues the schedule.
        tau = self.value(int(self.model.optimizer.iterations.numpy()))
        for prior in self.priors:
            prior.temperature.assign(tau)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self.priors:
            logs["temperature"] = float(self.priors[0].temperature.numpy())

    def get_config(self):
        return {"initial": self.initial, "rate": self.rate, "floor": self.floor}
