"""Clean accuracy of multi-task models: per task and joint (all tasks right)."""

import numpy as np


def task_accuracies(model, x, y, batch_size=500):
    """Per-task and joint accuracy of a model's classification outputs.

    Args:
        model: a callable returning `{task: logits (batch, classes)}`.
        x: inputs `(n, ...)`; y: `{task: labels (n,)}`.

    Returns:
        `{"<task>": accuracy, ..., "joint": fraction with every task right}`.
    """
    predictions = model.predict(x, batch_size=batch_size, verbose=0)
    result = {}
    all_right = np.ones(len(x), bool)
    for name, labels in y.items():
        if name not in predictions:
            raise ValueError(f"Labels name task {name!r}, which the model does not predict: {sorted(predictions)}.")
        right = np.argmax(predictions[name], axis=-1) == np.asarray(labels).reshape(-1)
        result[name] = float(right.mean())
        all_right &= right
    result["joint"] = float(all_right.mean())
    return result
