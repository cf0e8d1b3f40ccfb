"""Checks on user data, run before any training step (DESIGN: bad input), and
the one data check of every model entry point (`DataChecks`)."""

import numpy as np

# Slack for values an attack clipped to the range in float32.
_RANGE_TOLERANCE = 1e-6


def labels_as_dict(y, tasks, require_all=True):
    """Returns `{task name: labels}` from a dict, a list/tuple in task order or,
    for a single task, one array. Raises ValueError naming unknown or missing
    tasks; with `require_all=False` a dict may leave tasks out (attacks)."""
    names = [t.name for t in tasks]
    if isinstance(y, dict):
        unknown = sorted(set(y) - set(names))
        if unknown:
            raise ValueError(
                f"Labels name unknown task(s) {unknown}; the model's tasks are {names}."
            )
        missing = [n for n in names if n not in y]
        if missing and require_all:
            raise ValueError(f"Labels are missing for task(s) {missing}; the model's tasks are {names}.")
        return {n: y[n] for n in names if n in y}
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


def check_class_labels(labels, num_classes, num_examples, what):
    """Checks integer class labels `(n,)` in `[0, num_classes - 1]`, one per example."""
    labels = np.asarray(labels)
    if labels.shape[:1] != (num_examples,):
        raise ValueError(
            f"{what} has {labels.shape[0] if labels.ndim else 0} label(s) for {num_examples} example(s)."
        )
    if labels.dtype.kind not in "iu" and not (
        labels.dtype.kind == "f" and np.all(np.mod(labels, 1) == 0)
    ):
        raise ValueError(f"{what} needs integer class labels, received dtype {labels.dtype}.")
    if labels.ndim != 1:
        raise ValueError(f"{what} needs labels of shape (n,), received shape {labels.shape}.")
    if labels.size:
        low, high = labels.min(), labels.max()
        if low < 0 or high >= num_classes:
            raise ValueError(
                f"{what} labels must lie in [0, {num_classes - 1}], found values in [{low}, {high}]."
            )
    return labels


def check_labels(y, tasks, num_examples, require_all=True):
    """Checks labels of every task: one per example, classes in range, finite.

    With `require_all=False` tasks without labels are skipped (attacks)."""
    y = labels_as_dict(y, tasks, require_all)
    for task in tasks:
        if task.name not in y:
            continue
        what = f"Task {task.name!r}"
        if task.is_classification:
            check_class_labels(y[task.name], task.size, num_examples, what)
            continue
        labels = np.asarray(y[task.name])
        if labels.shape[:1] != (num_examples,):
            raise ValueError(
                f"{what} has {labels.shape[0] if labels.ndim else 0} label(s) for {num_examples} example(s)."
            )
        if tuple(labels.shape[1:]) != task.output_shape and not (
            task.output_shape == (1,) and labels.ndim == 1
        ):
            raise ValueError(
                f"{what} targets must have shape (n, "
                f"{', '.join(map(str, task.output_shape))}), received {labels.shape}."
            )
        if not np.all(np.isfinite(labels)):
            raise ValueError(f"{what} targets contain NaN or Inf.")
    return y


def as_value_range(value_range, name="value_range"):
    """`(min, max)` as floats, or None (any finite value); refuses anything else."""
    if value_range is None:
        return None
    if len(value_range) != 2 or not value_range[0] < value_range[1]:
        raise ValueError(f"`{name}` must be (min, max) with min < max, received {name}={value_range!r}.")
    return float(value_range[0]), float(value_range[1])


def check_value_range(x, value_range, name="x"):
    """Checks that every value of `x` lies in the model's `value_range = (min, max)`
    (`None`: any finite value)."""
    if value_range is None or np.size(x) == 0:
        return
    low, high = float(np.min(x)), float(np.max(x))
    if low < value_range[0] - _RANGE_TOLERANCE or high > value_range[1] + _RANGE_TOLERANCE:
        raise ValueError(
            f"`{name}` has values in [{low:g}, {high:g}] but the model takes inputs in "
            f"[{value_range[0]:g}, {value_range[1]:g}] (its `input_range`); images stored as 0..255 "
            "(uint8 or float) must be divided by 255 first, e.g. with "
            "tf_mtvib.data.pipeline.to_float_images (a model built with `input_range=None` accepts any "
            "finite value)."
        )


def check_domain_data(x, y, input_shape, num_tasks, num_classes):
    """Checks multi-domain (VMTL-family) data: `x = {"images": (n, ...), "task":
    (n,) task index}` and, unless None, class labels `y (n,)`."""
    if not isinstance(x, dict) or "images" not in x or "task" not in x:
        raise ValueError(
            "Multi-domain models take `x = {'images': ..., 'task': ...}` (task index per example), "
            f"received {type(x).__name__}."
        )
    images = check_images(x["images"], input_shape, name="x['images']")
    check_class_labels(x["task"], num_tasks, len(images), "x['task']")
    if y is not None:
        check_class_labels(y, num_classes, len(images), "`y`")


def check_model_data(model, x, y=None, require_all_labels=True):
    """The data check of every entry point that takes a model and data
    (evaluation, attacks): the model's own `check_data` (`DataChecks`) where it
    has one; for other callables, a non-empty, finite `x` and one label per example."""
    if hasattr(model, "check_data"):
        model.check_data(x, y, require_all_labels=require_all_labels)
        return
    x = np.asarray(x)
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"`x` is empty (shape {x.shape}).")
    if x.dtype.kind == "f" and not np.all(np.isfinite(x)):
        raise ValueError("`x` contains NaN or Inf value(s).")
    if y is not None and not isinstance(y, dict):
        y = {"labels": y}
    for name, labels in (y or {}).items():
        if np.shape(labels)[:1] != x.shape[:1]:
            raise ValueError(f"Task {name!r} has {len(labels)} label(s) for {x.shape[0]} example(s).")


def check_finite_weights(model, what=None):
    """Raises ValueError when any weight of `model` is NaN or Inf (a diverged run)."""
    bad = [w.path for w in model.weights if not np.all(np.isfinite(w.numpy()))]
    if bad:
        raise ValueError(
            f"{what or 'The model ' + repr(model.name)} has non-finite (NaN or Inf) weights in "
            f"{len(bad)} variable(s), e.g. {bad[0]}: its training diverged; train it again with a "
            "lower learning rate."
        )


def check_dataset_spec(dataset, tasks, input_shape, labeled=True):
    """Checks the element structure of a `tf.data.Dataset` of `(x, labels)`
    (with `labeled=False`, as `predict` reads it: `x` alone, or a tuple whose
    labels are ignored)."""
    spec = dataset.element_spec
    if not labeled:
        spec = (spec[0] if isinstance(spec, tuple) else spec, None)
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
    if labeled:
        labels_as_dict(y_spec, tasks)


class DataChecks:
    """Mixin for `keras.Model` subclasses (listed before `keras.Model`): `fit`,
    `evaluate` and `predict` pass their NumPy / tensor data through
    `self.check_data(x, y)` before Keras sees it, so bad data fails with a
    message naming it instead of deep in TensorFlow; evaluation and attacks
    call the same `check_data`. In-memory data for `predict` / `evaluate` and
    fit's `validation_data` go to Keras as batched datasets without tf.data
    autotuning (`pipeline.batches_of`): same batches, no iterator stall."""

    def check_data(self, x, y=None, require_all_labels=True, labeled=True):
        """`labeled=False`: data for `predict`, whose datasets may yield `x` alone."""
        raise NotImplementedError

    def _check_validation_data(self, validation_data):
        if isinstance(validation_data, tuple) and len(validation_data) >= 2:
            self.check_data(validation_data[0], validation_data[1])
        elif validation_data is not None:
            self.check_data(validation_data)

    def fit(self, *args, **kwargs):
        import inspect

        import keras
        import tensorflow as tf  # loaded already by the model; this module stays NumPy-only otherwise

        from tf_mtvib.data import pipeline

        # Keras' own signature, so that positional arguments (batch_size, ...) are seen too.
        arguments = inspect.signature(keras.Model.fit).bind(self, *args, **kwargs).arguments
        arguments.pop("self")
        x, y = arguments.get("x"), arguments.get("y")
        if isinstance(x, tf.data.Dataset):
            arguments.setdefault("shuffle", False)  # a Dataset shuffles itself; Keras warns otherwise
        self.check_data(x, y)
        validation_data = arguments.get("validation_data")
        self._check_validation_data(validation_data)
        if (
            isinstance(validation_data, tuple)
            and 2 <= len(validation_data) <= 3
            and all(pipeline.is_in_memory(part) for part in validation_data)
            and arguments.get("validation_steps") is None
        ):
            # Validation arrays become one pipeline without autotuning: Keras
            # otherwise makes a new iterator every epoch (see pipeline.without_autotune).
            size = arguments.pop("validation_batch_size", None) or arguments.get("batch_size") or 32
            arguments["validation_data"] = pipeline.batches_of(validation_data, size)
        return super().fit(**arguments)

    def evaluate(self, x=None, y=None, batch_size=None, verbose="auto", sample_weight=None, steps=None,
                 *args, **kwargs):
        from tf_mtvib.data import pipeline

        self.check_data(x, y)
        parts = [part for part in (x, y, sample_weight) if part is not None]
        # fit's own validation call reads the dataset Keras cached for the whole fit: leave it alone.
        cached = kwargs.get("_use_cached_eval_dataset", False)
        if not cached and steps is None and x is not None and all(pipeline.is_in_memory(part) for part in parts):
            if sample_weight is not None and y is None:
                raise ValueError("`sample_weight` needs labels `y`, received y=None.")
            data = pipeline.batches_of(parts[0] if len(parts) == 1 else tuple(parts), batch_size or 32)
            x, y, sample_weight, batch_size = data, None, None, None
        return super().evaluate(x, y, batch_size, verbose, sample_weight, steps, *args, **kwargs)

    def predict(self, x, batch_size=None, verbose="auto", steps=None, callbacks=None):
        from tf_mtvib.data import pipeline

        self.check_data(x, labeled=False)
        if steps is None and pipeline.is_in_memory(x):
            # Same batches as Keras would cut from the arrays, without its autotuned pipeline's stall.
            x, batch_size = pipeline.batches_of(x, batch_size or 32), None
        return super().predict(x, batch_size=batch_size, verbose=verbose, steps=steps, callbacks=callbacks)
