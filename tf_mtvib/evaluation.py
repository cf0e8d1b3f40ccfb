"""Clean accuracy of multi-task models: per task and joint (all tasks right)."""

import numpy as np

from tf_mtvib.data.validation import check_model_data


def task_accuracies(model, x, y, batch_size=500):
    """Per-task and joint accuracy of a model's classification outputs.

    Args:
        model: a callable returning `{task: logits (batch, classes)}`.
        x: inputs `(n, ...)`; y: `{task: labels (n,)}`.

    Returns:
        `{"<task>": accuracy, ..., "joint": fraction with every task right}`.
    """
    check_model_data(model, x, y)
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


def domain_accuracies(model, data, batch_size=500):
    """Test accuracy of a VMTL-family model per task and their unweighted mean.

    Args:
        model: maps `{"images", "task"}` to logits `(n, classes)`.
        data: a `tf_mtvib.data.domains.DomainData`.

    Returns:
        `{"<task name>": accuracy, ..., "average": mean over tasks}`.
    """
    check_model_data(model, data.inputs("test"), data.y_test)
    logits = model.predict(data.inputs("test"), batch_size=batch_size, verbose=0)
    right = np.argmax(logits, axis=-1) == data.y_test
    result = {name: float(right[data.task_test == t].mean()) for t, name in enumerate(data.task_names)}
    result["average"] = float(np.mean(list(result.values())))
    return result
