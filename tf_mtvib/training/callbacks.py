"""Callbacks for training runs."""

import json
import os

import keras

from tf_mtvib.data import atomic


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the whole model (weights and optimizer state) after every epoch,
    atomically, so that an interrupted run continues where it stopped.

    The folder holds `model.keras` and `state.json` (`{"epoch": completed
    epochs, "history": {...}}`); `EpochCheckpoint.restore(folder)` returns the
    compiled model and the state, or `(None, None)` when there is none.
    """

    def __init__(self, folder, history=None):
        super().__init__()
        self.folder = folder
        self.history = {k: list(v) for k, v in (history or {}).items()}

    def on_epoch_end(self, epoch, logs=None):
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(float(value))
        os.makedirs(self.folder, exist_ok=True)
        with atomic.atomic_path(os.path.join(self.folder, "model.keras"), suffix=".keras") as tmp:
            self.model.save(tmp)
        atomic.write_json(os.path.join(self.folder, "state.json"), {"epoch": epoch + 1, "history": self.history})

    @staticmethod
    def restore(folder):
        state_path = os.path.join(folder, "state.json")
        model_path = os.path.join(folder, "model.keras")
        if not (os.path.isfile(state_path) and os.path.isfile(model_path)):
            return None, None
        with open(state_path) as f:
            state = json.load(f)
        return keras.models.load_model(model_path), state
