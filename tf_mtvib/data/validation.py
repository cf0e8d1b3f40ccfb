"""Checks on user data, run before any training step (DESIGN: bad input)."""

import numpy as np


def labels_as_dict(y, tasks):
    """Returns `{task name: labels}` from a dict, a list/tuple in task order or,
    for a single task, one array. Raises ValueError naming unknown or missing tasks."""
    names = [t.name for t in tasks]
    if isinstance(y, dict):
        unknown = sorted(set(y) - set(names))
        if unknown:
            raise ValueError(
                f"Labels name unknown task(s) {unknown}; the model's tasks are {names}."
            )
        missing = [n for n in names if n not in y]
        if missing:
            raise ValueError(f"Labels are missing for task(s) {missing}.")
        return {n: y[n] for n in names}
    if isinstance(y, (list, tuple)):
        if len(y) != len(names):
            raise ValueError(
                f"Received labels for {len(y)} task(s) but the model has "
                f"{len(names)}: {names}."
            )
        return dict(zip(names, y))
    if len(names) == 1:
        return {names[0]: y}
    raise ValueError(
        f"Labels for several tasks must be a dict keyed by {names} or a list in "
        f"that order, received {type(y).__name__}."
    )


def check_images(x, input_shape, name="x"):
    """Checks an image array: numeric, `(n, *input_shape)`, non-empty, finite."""
    x = np.asarray(x)
    if x.dtype.kind not in "uif":
        raise ValueError(
            f"`{name}` must hold numbers, received dtype {x.dtype}."
        )
    if x.ndim != len(input_shape) + 1 or tuple(x.shape[1:]) != tuple(input_shape):
        raise ValueError(
            f"`{name}` must have shape (n, {', '.join(map(str, input_shape))}), "
            f"received shape {x.shape}."
        )
    if x.shape[0] == 0:
        raise ValueError(f"`{name}` is empty (0 examples).")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
        raise ValueError(f"`{name}` contains {bad} NaN or Inf value(s).")
    return x


def check_labels(y, tasks, num_examples):
    """Checks labels of every task: one per example, classes in range, finite."""
    y = labels_as_dict(y, tasks)
    for task in tasks:
        labels = np.asarray(y[task.name])
        if labels.shape[:1] != (num_examples,):
            raise ValueError(
                f"Task {task.name!r} has {labels.shape[0] if labels.ndim else 0} "
                f"label(s) for {num_examples} example(s)."
            )
        if task.is_classification:
            if labels.dtype.kind not in "iu" and not (
                labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0)
            ):
                raise ValueError(
                    f"Task {task.name!r} needs integer class labels, received "
                    f"dtype {labels.dtype}."
                )
            if labels.ndim != 1:
                raise ValueError(
                    f"Task {task.name!r} needs labels of shape (n,), received "
                    f"shape {labels.shape}."
                )
            low, high = labels.min(), labels.max()
            if low < 0 or high >= task.size:
                raise ValueError(
                    f"Task {task.name!r} labels must lie in [0, {task.size - 1}], "
                    f"found values in [{low}, {high}]."
                )
        else:
            if tuple(labels.shape[1:]) != task.output_shape and not (
                task.output_shape == (1,) and labels.ndim == 1
            ):
                raise ValueError(
                    f"Task {task.name!r} targets must have shape (n, "
                    f"{', '.join(map(str, task.output_shape))}), received {labels.shape}."
                )
            if not np.all(np.isfinite(labels)):
                raise ValueError(f"Task {task.name!r} targets contain NaN or Inf.")
    return y


def check_dataset_spec(dataset, tasks, input_shape):
    """Checks the element structure of a `tf.data.Dataset` of `(x, labels)`."""
    spec = dataset.element_spec
    if not isinstance(spec, tuple) or len(spec) < 2:
        raise ValueError(
            "The dataset must yield (x, labels) or (x, labels, sample_weight), "
            f"received elements {spec}."
        )
    x_spec, y_spec = spec[0], spec[1]
    shape = tuple(x_spec.shape[1:]) if x_spec.shape.rank else None
    if shape != tuple(input_shape):
        raise ValueError(
            f"The dataset yields images of shape {x_spec.shape} but the model "
            f"expects (batch, {', '.join(map(str, input_shape))})."
        )
    labels_as_dict(y_spec, tasks)
