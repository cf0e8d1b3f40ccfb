"""What the VMTL paper's systems share: the multi-domain input
`x = {"images": (batch, ...), "task": (batch,)}`, per-task averages, the
base model (per-task metrics, extractor sharing, config), the deterministic
`MultiDomainClassifier` (STL, bMTL) and the offline domains' extractor."""

import keras
from keras import ops

from tf_mtvib.data import validation
from tf_mtvib.distribute import scale_to_replicas


def split_inputs(inputs, num_tasks):
    if not isinstance(inputs, dict) or "images" not in inputs or "task" not in inputs:
        raise ValueError(
            "Multi-domain models take `x = {'images': ..., 'task': ...}` (task index per example), "
            f"received {type(inputs).__name__}."
        )
    return inputs["images"], ops.cast(ops.reshape(inputs["task"], (-1,)), "int32")


def flat_labels(y):
    return ops.cast(ops.reshape(y, (-1,)), "int32")


def task_mean(values, onehot, sample_weight=None):
    """`(1/T') sum_t (1/N_t) sum_{n in t} values_n` over the T' tasks present
    in the batch: the per-task averages of VMTL Eq. 8, so that a task's weight
    does not depend on its share of the batch. `values (batch,)`,
    `onehot (batch, T)`, optional `sample_weight (batch,)`."""
    weights = onehot if sample_weight is None else onehot * ops.cast(ops.reshape(sample_weight, (-1, 1)), "float32")
    totals = ops.sum(weights, axis=0)
    per_task = ops.sum(weights * values[:, None], axis=0) / ops.maximum(totals, 1e-12)
    present = ops.cast(totals > 0, "float32")
    return ops.sum(per_task * present) / ops.maximum(ops.sum(present), 1.0)


class MultiDomainModel(validation.DataChecks, keras.Model):
    """Shared plumbing: per-task metrics, extractor sharing, config, data checks.

    `input_range = (min, max)`, when given, is the range every image value
    must lie in (`check_data` refuses others, e.g. 0..255 images for a model
    made for [0, 1]); `None` (the default, for pre-extracted features)
    accepts any finite value. `build_vmtl_system` sets `(0, 1)` for images.

    Both families train through Keras' own `train_step` / `test_step`: the
    subclasses' `compute_loss(x, y, y_pred, sample_weight, training)` is
    the whole objective, so `fit`, `evaluate`, `sample_weight`,
    tf.distribute and mixed precision's loss scaling are Keras'. The
    reported `loss` (and `val_loss`) is that objective.
    """

    # One output scored by each example's own task (`{"images", "task"}`
    # inputs): export and the CLI read this instead of checking classes.
    task_indexed = True

    def __init__(self, num_tasks, num_classes, extractor, input_shape=None, task_names=None, input_range=None,
                 **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"`num_tasks` must be a positive int, received num_tasks={num_tasks!r}.")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2, received num_classes={num_classes!r}.")
        self.num_tasks = num_tasks
        self.num_classes = num_classes
        self.example_shape = tuple(input_shape) if input_shape is not None else None
        self.input_range = validation.as_value_range(input_range, "input_range")
        self.task_names = list(task_names) if task_names else [f"task_{t}" for t in range(num_tasks)]
        if len(self.task_names) != num_tasks:
            raise ValueError(f"`task_names` must name {num_tasks} tasks, received {self.task_names}.")
        if isinstance(extractor, (list, tuple)):
            if len(extractor) != num_tasks:
                raise ValueError(f"`extractor` must be one layer or {num_tasks} layers, received {len(extractor)}.")
            extractor = list(extractor)
        self.extractor = extractor
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.task_accuracy_trackers = [
            keras.metrics.SparseCategoricalAccuracy(name=f"{n}_accuracy") for n in self.task_names
        ]
        self.nll_tracker = keras.metrics.Mean(name="nll")

    def _build_if_shaped(self):
        # Built at once for a known input shape, so that weights exist before
        # the first call (loading, export, optimizer state).
        if self.example_shape is not None:
            self.build((None,) + self.example_shape)

    def check_data(self, x, y=None, require_all_labels=True, labeled=True):
        """Validates `{"images", "task"}` arrays and class labels (`DataChecks`)."""
        if self.example_shape is not None and isinstance(x, dict):
            validation.check_domain_data(x, y, self.example_shape, self.num_tasks, self.num_classes)
            validation.check_value_range(x["images"], self.input_range, name="x['images']")

    @property
    def shared_extractor(self):
        return not isinstance(self.extractor, list)

    def features(self, images, onehot, training=None):
        """`(batch, F)`: each example through its task's extractor (or the shared one)."""
        if self.shared_extractor:
            return self.extractor(images, training=training)
        stacked = ops.stack([e(images, training=training) for e in self.extractor], axis=0)
        return ops.einsum("tbf,bt->bf", stacked, onehot)

    def _build_extractors(self, input_shape):
        """Builds the extractor(s) for `input_shape` (of the images, or the
        `{"images": ..., "task": ...}` dict) and returns the feature width."""
        if isinstance(input_shape, dict):
            input_shape = input_shape["images"]
        extractors = [self.extractor] if self.shared_extractor else self.extractor
        for layer in extractors:
            if not layer.built:
                layer.build(input_shape)
        return extractors[0].compute_output_shape(input_shape)[-1]

    def compile(self, optimizer="adam", loss=None, **kwargs):
        if loss is not None:
            raise ValueError(f"{type(self).__name__} computes its own loss; received loss={loss!r}.")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _layer_losses(self):
        total = 0.0
        for layer_loss in self.losses:
            total = total + ops.cast(self._aggregate_additional_loss(layer_loss), "float32")
        return total

    @property
    def metrics(self):
        # The z heads are GaussianBottlenecks used only for their posterior
        # parameters; their own KL trackers would log zeros.
        inner = {id(m) for layer in self._flatten_layers(include_self=False) for m in layer.metrics}
        return [m for m in super().metrics if id(m) not in inner]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        _, task = split_inputs(x, self.num_tasks)
        labels = flat_labels(y)
        onehot = ops.one_hot(task, self.num_tasks)
        self.accuracy_tracker.update_state(labels, y_pred, sample_weight=sample_weight)
        for t, tracker in enumerate(self.task_accuracy_trackers):
            weight = onehot[:, t] if sample_weight is None else onehot[:, t] * ops.reshape(sample_weight, (-1,))
            tracker.update_state(labels, y_pred, sample_weight=weight)
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _base_config(self):
        extractor = (
            keras.saving.serialize_keras_object(self.extractor)
            if self.shared_extractor
            else [keras.saving.serialize_keras_object(e) for e in self.extractor]
        )
        return {
            "name": self.name,
            "num_tasks": self.num_tasks,
            "num_classes": self.num_classes,
            "extractor": extractor,
            "input_shape": None if self.example_shape is None else list(self.example_shape),
            "task_names": self.task_names,
            "input_range": None if self.input_range is None else list(self.input_range),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        extractor = config["extractor"]
        config["extractor"] = (
            [keras.saving.deserialize_keras_object(e) for e in extractor]
            if isinstance(extractor, list)
            else keras.saving.deserialize_keras_object(extractor)
        )
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_mtvib")
class MultiDomainClassifier(MultiDomainModel):
    """Deterministic baselines: STL (one extractor per task) and bMTL (a shared
    extractor); each task has its own softmax head. Loss: the per-task mean
    cross-entropy averaged over tasks (as VMTL's Eq. 8 averages)."""

    def __init__(self, num_tasks, num_classes, extractor, input_shape=None, task_names=None, **kwargs):
        super().__init__(num_tasks, num_classes, extractor, input_shape, task_names, **kwargs)
        self.heads = [keras.layers.Dense(num_classes, name=f"head_{t}") for t in range(num_tasks)]
        self._build_if_shaped()

    def build(self, input_shape):
        feature_dim = self._build_extractors(input_shape)
        for head in self.heads:
            head.build((None, feature_dim))
        self.built = True

    def call(self, inputs, training=None):
        images, task = split_inputs(inputs, self.num_tasks)
        onehot = ops.one_hot(task, self.num_tasks)
        h = self.features(images, onehot, training)
        logits = ops.stack([head(h) for head in self.heads], axis=0)
        return ops.einsum("tbc,bt->bc", logits, onehot)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        _, task = split_inputs(x, self.num_tasks)
        per_example = keras.losses.sparse_categorical_crossentropy(
            flat_labels(y), ops.cast(y_pred, "float32"), from_logits=True
        )
        nll = task_mean(per_example, ops.one_hot(task, self.num_tasks), sample_weight)
        self.nll_tracker.update_state(nll)
        return scale_to_replicas(nll) + self._layer_losses()

    def get_config(self):
        return self._base_config()


def domain_extractor(input_shape, name="extractor"):
    """Feature extractor for the offline domains (28x28 images) or, for 1-D
    inputs (pre-extracted features), a 256-unit MLP layer: `(batch, 256)`."""
    stack = [keras.Input(tuple(input_shape))]
    if len(input_shape) == 3:
        stack += [
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
        ]
    stack.append(keras.layers.Dense(256, activation="relu"))
    return keras.Sequential(stack, name=name)
