"""Task descriptions shared by models, data pipelines, attacks and the CLI."""

import math

import keras

KINDS = ("classification", "regression")


@keras.saving.register_keras_serializable(package="tf_mtvib")
class Task:
    """One prediction task of a multi-task model.

    Args:
        name: key of the task in label dicts and in the model's outputs.
        kind: `"classification"` (integer labels, decoder emits logits) or
            `"regression"` (real targets, decoder emits values).
        size: number of classes for classification; the target shape
            (an int or a tuple of ints) for regression.
        loss: a Keras loss identifier or object. Default value: `None`, which
            means sparse categorical cross-entropy on logits for classification
            and mean squared error for regression.
    """

    def __init__(self, name, kind="classification", size=10, loss=None):
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(
                f"Task `name` must be a Python identifier, received name={name!r}."
            )
        if kind not in KINDS:
            raise ValueError(
                f"Task `kind` must be one of {KINDS}, received kind={kind!r}."
            )
        shape = tuple(size) if isinstance(size, (tuple, list)) else (size,)
        if not shape or any(not isinstance(d, int) or d < 1 for d in shape):
            raise ValueError(
                "Task `size` must be a positive int (or a tuple of them for "
                f"regression), received size={size!r}."
            )
        if kind == "classification" and (len(shape) != 1 or shape[0] < 2):
            raise ValueError(
                "A classification Task needs `size` >= 2 classes, received "
                f"size={size!r}."
            )
        self.name = name
        self.kind = kind
        self.size = shape[0] if len(shape) == 1 else shape
        self.loss = loss

    @property
    def output_shape(self):
        """Shape of one example's output: `(num_classes,)` or the target shape."""
        return self.size if isinstance(self.size, tuple) else (self.size,)

    @property
    def output_units(self):
        """Number of units of the decoder's last Dense layer."""
        return math.prod(self.output_shape)

    @property
    def is_classification(self):
        return self.kind == "classification"

    def loss_fn(self):
        """The per-example loss as a Keras `Loss` with 'none' reduction."""
        if self.loss is None:
            if self.is_classification:
                return keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True, reduction=None
                )
            return keras.losses.MeanSquaredError(reduction=None)
        loss = keras.losses.get(self.loss)
        if isinstance(loss, keras.losses.Loss):
            loss = loss.__class__.from_config({**loss.get_config(), "reduction": None})
        return loss

    def get_config(self):
        loss = self.loss
        if loss is not None and not isinstance(loss, str):
            loss = keras.saving.serialize_keras_object(loss)
        size = list(self.size) if isinstance(self.size, tuple) else self.size
        return {"name": self.name, "kind": self.kind, "size": size, "loss": loss}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        if isinstance(config.get("loss"), dict):
            config["loss"] = keras.saving.deserialize_keras_object(config["loss"])
        return cls(**config)

    def __eq__(self, other):
        return isinstance(other, Task) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash(self.name)

    def __repr__(self):
        return f"Task(name={self.name!r}, kind={self.kind!r}, size={self.size!r})"


def as_tasks(tasks):
    """Normalises `tasks` (Task objects or their configs) into a list of Task.

    Raises ValueError for an empty list or repeated task names.
    """
    if isinstance(tasks, Task):
        tasks = [tasks]
    result = [t if isinstance(t, Task) else Task.from_config(t) for t in tasks]
    if not result:
        raise ValueError("`tasks` must name at least one Task, received [].")
    names = [t.name for t in result]
    if len(set(names)) != len(names):
        raise ValueError(f"Task names must be unique, received {names}.")
    return result


def multi_digit_tasks(names=("top_left", "bottom_right"), num_classes=10):
    """The two 10-way tasks of MultiMNIST / MultiFashion."""
    return [Task(n, "classification", num_classes) for n in names]
