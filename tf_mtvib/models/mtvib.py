"""MultiTaskVIB: a shared (or per-task) encoder, an optional Gaussian
bottleneck and one decoder per task, with the task losses weighted
(MTVIB Eq. 23). The paper's five systems are built in `systems.py`."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_mtvib.data import validation
from tf_mtvib.distribute import scale_to_replicas
from tf_mtvib.layers.weighting import FixedWeighting, UncertaintyWeighting
from tf_mtvib.tasks import Task, as_tasks


def _per_task(value, tasks, what):
    """Accepts one object shared by all tasks or a dict keyed by task name."""
    if isinstance(value, dict):
        names = [t.name for t in tasks]
        if sorted(value) != sorted(names):
            raise ValueError(
                f"`{what}` must have one entry per task {names}, received keys "
                f"{sorted(value)}."
            )
    return value


def _serialize(obj):
    if isinstance(obj, dict):
        return {k: keras.saving.serialize_keras_object(v) for k, v in obj.items()}
    return keras.saving.serialize_keras_object(obj)


def _deserialize(config):
    if isinstance(config, dict) and "class_name" not in config:
        return {k: keras.saving.deserialize_keras_object(v) for k, v in config.items()}
    return keras.saving.deserialize_keras_object(config)


def _deserialize_batch_hook(config):
    # Models saved before the hook was serialized with its class stored the
    # bare AdversarialTraining config; it is found by its registered name
    # (tf_mtvib/__init__.py imports tf_mtvib.training, which registers it).
    if "class_name" not in config:
        return keras.saving.get_registered_object("tf_mtvib>AdversarialTraining").from_config(config)
    return keras.saving.deserialize_keras_object(config)


def _task_weight(sample_weight, task_name):
    """A task's `(batch,)` sample weights: Keras hands `fit` / `evaluate` on
    arrays one weight array per task (broadcast to the labels' dict), a
    dataset's third element stays one array for all tasks."""
    if isinstance(sample_weight, dict):
        return sample_weight.get(task_name)
    return sample_weight


@keras.saving.register_keras_serializable(package="tf_mtvib")
class MultiTaskVIB(validation.DataChecks, keras.Model):
    """Encoder -> optional Gaussian bottleneck -> one decoder per task.

    The loss is `weighting([L_1, ..., L_K]) + sum(layer losses)`; with a
    `GaussianBottleneck` and `UncertaintyWeighting` this is MTVIB Eq. 23,
    `sum_k (E_k / sigma_k^2 + log sigma_k) + beta * KL`.

    Encoders and bottlenecks are either one layer shared by all tasks, or a
    dict keyed by task name (separate branches, e.g. STL and STVIB: the sum of
    disjoint losses trains each branch exactly as if alone).

    `call(x)` maps images `(batch, H, W, C)` to `{task name: output}`: logits
    `(batch, num_classes)` for classification, values for regression. At
    inference with a bottleneck of `num_samples = S > 1` the classification
    output is `log(mean_s softmax(logits_s))` over S latent samples (Alemi et
    al.'s prediction), so `softmax` of it is the averaged probability.
    `call(x, latent_samples=S)` does the same for any S for one call
    (`latent_samples=1` is one random draw: the sampled model that attacks
    average gradients over); it does not change training.

    While training, `fit` reports `<task>_loss`, `<task>_accuracy`,
    `joint_accuracy` (all classification tasks right), `<task>_sigma` for
    learned weights and `<bottleneck>_kl`.

    Args:
        tasks: list of `Task`.
        encoder: a layer, or a dict `{task name: layer}`.
        decoders: dict `{task name: layer}` mapping the code to the output.
        bottleneck: `None`, a `GaussianBottleneck`, or a dict of them.
        weighting: `UncertaintyWeighting` or `FixedWeighting`. Default value:
            `None`, meaning equal weights 1.
        input_shape: shape of one input example, used to validate data.
        input_range: `(min, max)` of the input values the model was made for;
            `fit`, `evaluate`, `predict`, evaluation and attacks reject data
            outside it, and exports record it. `None` accepts any finite
            value. Default value: `(0.0, 1.0)`, images scaled from 0..255.
        adversarial: a batch hook to train on attacked batches (MTRobust
            Sec. 5.5), such as `tf_mtvib.training.AdversarialTraining`: any
            Keras-serializable object with `perturb_batch(model, x, y)`
            returning the batch to train on (`y` a dict of labels by task
            name). Default value: `None`.
    """

    def __init__(
        self,
        tasks,
        encoder,
        decoders,
        bottleneck=None,
        weighting=None,
        input_shape=None,
        adversarial=None,
        input_range=(0.0, 1.0),
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.tasks = as_tasks(tasks)
        self.task_names = [t.name for t in self.tasks]
        self.example_shape = tuple(input_shape) if input_shape is not None else None
        self.input_range = validation.as_value_range(input_range, "input_range")

        # === Layers ===
        self.encoder = _per_task(encoder, self.tasks, "encoder")
        self.bottleneck = _per_task(bottleneck, self.tasks, "bottleneck")
        self.decoders = _per_task(decoders, self.tasks, "decoders")
        if not isinstance(self.decoders, dict):
            raise ValueError("`decoders` must be a dict keyed by task name.")
        self.weighting = weighting or FixedWeighting(num_tasks=len(self.tasks))
        if self.weighting.num_tasks != len(self.tasks):
            raise ValueError(
                f"`weighting` combines {self.weighting.num_tasks} task losses but there "
                f"are {len(self.tasks)} tasks."
            )
        if not self.weighting.built:
            self.weighting.build(None)
        if isinstance(adversarial, dict):
            adversarial = _deserialize_batch_hook(adversarial)
        self.adversarial = adversarial

        # === Metrics ===
        self._loss_fns = {t.name: t.loss_fn() for t in self.tasks}
        self.task_loss_trackers = {
            t.name: keras.metrics.Mean(name=f"{t.name}_loss") for t in self.tasks
        }
        self.accuracy_trackers = {
            t.name: keras.metrics.SparseCategoricalAccuracy(name=f"{t.name}_accuracy")
            for t in self.tasks
            if t.is_classification
        }
        self.joint_accuracy_tracker = keras.metrics.Mean(name="joint_accuracy")
        self.sigma_trackers = {}
        if isinstance(self.weighting, UncertaintyWeighting):
            self.sigma_trackers = {
                t.name: keras.metrics.Mean(name=f"{t.name}_sigma") for t in self.tasks
            }

    # --- structure -------------------------------------------------------
    # One output per task head, not one task-indexed output (VMTL's family):
    # export and the CLI read this instead of checking classes.
    task_indexed = False

    def _branch(self, mapping, task_name):
        return mapping.get(task_name) if isinstance(mapping, dict) else mapping

    @property
    def shared_bottleneck(self):
        """Whether every task reads the same q(z|x) (one bottleneck, or none)."""
        return not isinstance(self.bottleneck, dict)

    def posterior(self, inputs, task_name=None, training=None):
        """`(mu, sigma)` of q(z|x) for a task's bottleneck, each `(batch, latent_dim)`.

        `task_name` defaults to the first task. Raises for a model without a
        bottleneck.
        """
        task_name = task_name or self.task_names[0]
        if task_name not in self.task_names:
            raise ValueError(f"`task_name` must be one of {self.task_names}, received task_name={task_name!r}.")
        bottleneck = self._branch(self.bottleneck, task_name)
        if bottleneck is None:
            raise ValueError(f"{self.name} has no bottleneck: it defines no posterior q(z|x).")
        return bottleneck.posterior_params(self.encode(inputs, task_name, training=training))

    @property
    def bottlenecks(self):
        """The distinct bottleneck layers of the model (possibly none)."""
        if self.bottleneck is None:
            return []
        if isinstance(self.bottleneck, dict):
            return [self.bottleneck[n] for n in self.task_names]
        return [self.bottleneck]

    def kl_weights(self):
        """`[(variable, full_value), ...]`: each bottleneck's KL weight and its
        `beta`, the pairs a schedule such as `KLAnnealing` sets."""
        return [(b.kl_weight, b.beta) for b in self.bottlenecks]

    def build(self, input_shape):
        for task in self.tasks:
            encoder = self._branch(self.encoder, task.name)
            if not encoder.built:
                encoder.build(input_shape)
            code_shape = encoder.compute_output_shape(input_shape)
            bottleneck = self._branch(self.bottleneck, task.name)
            if bottleneck is not None:
                if not bottleneck.built:
                    bottleneck.build(code_shape)
                code_shape = bottleneck.compute_output_shape(code_shape)
            if not self.decoders[task.name].built:
                self.decoders[task.name].build(code_shape)
        self.built = True

    def encode(self, inputs, task_name=None, training=None):
        """Returns the features fed to the bottleneck (or decoders) of a task."""
        task_name = task_name or self.task_names[0]
        return self._branch(self.encoder, task_name)(inputs, training=training)

    def call(self, inputs, training=None, latent_samples=None):
        codes = {}
        outputs = {}
        for task in self.tasks:
            encoder = self._branch(self.encoder, task.name)
            bottleneck = self._branch(self.bottleneck, task.name)
            key = (id(encoder), id(bottleneck))
            if key not in codes:
                features = encoder(inputs, training=training)
                if bottleneck is None:
                    codes[key] = (features, None)
                else:
                    z = bottleneck(features, training=training)
                    samples = None
                    num_samples = latent_samples or (
                        bottleneck.num_samples if bottleneck.num_samples > 1 else None
                    )
                    if not training and num_samples:
                        samples = bottleneck.sample(features, num_samples)
                    codes[key] = (z, samples)
            z, samples = codes[key]
            decoder = self.decoders[task.name]
            if samples is None:
                outputs[task.name] = decoder(z, training=training)
            else:
                outputs[task.name] = self._mc_decode(decoder, task, samples, training)
        return outputs

    def _mc_decode(self, decoder, task, samples, training):
        num_samples = ops.shape(samples)[0]
        flat = ops.reshape(samples, (-1, ops.shape(samples)[-1]))
        out = decoder(flat, training=training)
        out = ops.reshape(out, (num_samples, -1) + tuple(out.shape[1:]))
        if task.is_classification:
            log_probs = ops.log_softmax(out, axis=-1)
            return ops.logsumexp(log_probs, axis=0) - ops.log(
                ops.cast(num_samples, log_probs.dtype)
            )
        return ops.mean(out, axis=0)

    # --- training ------------------------------------------------------
    def compile(self, optimizer="adam", loss=None, **kwargs):
        if loss is not None:
            raise ValueError(
                "MultiTaskVIB computes its loss from its tasks; set a task's loss "
                f"with Task(loss=...) instead of compile(loss=...), received loss={loss!r}."
            )
        super().compile(optimizer=optimizer, **kwargs)

    def train_step(self, data):
        if self.adversarial is not None:
            x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
            # Crafting calls the model too; the training call below comes last,
            # so its add_loss terms (the KL of the batch trained on) are the
            # ones compute_loss sees.
            x = self.adversarial.perturb_batch(self, x, validation.labels_as_dict(y, self.tasks))
            data = keras.utils.pack_x_y_sample_weight(x, y, sample_weight)
        return super().train_step(data)

    def compile_from_config(self, config):
        # Keras skips compile() on load for models that override it.
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = validation.labels_as_dict(y, self.tasks)
        task_losses = []
        for task in self.tasks:
            per_example = self._loss_fns[task.name](labels[task.name], y_pred[task.name])
            per_example = ops.cast(per_example, "float32")
            if len(per_example.shape) > 1:
                per_example = ops.mean(
                    ops.reshape(per_example, (ops.shape(per_example)[0], -1)), axis=1
                )
            weight = _task_weight(sample_weight, task.name)
            if weight is not None:
                weight = ops.cast(ops.reshape(weight, (-1,)), "float32")
                examples = ops.sum(weight)
                task_loss = ops.sum(per_example * weight) / ops.maximum(examples, 1e-12)
            else:
                examples = ops.cast(ops.shape(per_example)[0], "float32")
                task_loss = ops.mean(per_example)
            # Weighted by the batch's (weighted) examples, so that the epoch value is a mean over examples.
            self.task_loss_trackers[task.name].update_state(task_loss, sample_weight=examples)
            task_losses.append(task_loss)
        total = scale_to_replicas(self.weighting(task_losses))
        if self.sigma_trackers:
            sigmas = ops.unstack(self.weighting.sigmas)
            for tracker, sigma in zip(self.sigma_trackers.values(), sigmas):
                tracker.update_state(sigma)
        for layer_loss in self.losses:
            total = total + ops.cast(self._aggregate_additional_loss(layer_loss), "float32")
        if not training:
            # The bottleneck records its KL metric in training calls only
            # (inference calls by attacks and exports must not touch metrics);
            # the validation pass records it here, so val_<name>_kl is the KL
            # inside val_loss.
            for bottleneck in self.bottlenecks:
                bottleneck.kl_tracker.update_state(bottleneck.latest_kl)
        return total

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        labels = validation.labels_as_dict(y, self.tasks)
        correct = []
        for name, tracker in self.accuracy_trackers.items():
            tracker.update_state(labels[name], y_pred[name], sample_weight=_task_weight(sample_weight, name))
            predicted = ops.argmax(y_pred[name], axis=-1)
            correct.append(
                ops.equal(ops.cast(ops.reshape(labels[name], (-1,)), "int64"), ops.cast(predicted, "int64"))
            )
        if correct:
            joint = ops.all(ops.stack(correct, axis=0), axis=0)
            # Keras broadcasts one weight array to every task: any task's weights are the example weights.
            joint_weight = _task_weight(sample_weight, next(iter(self.accuracy_trackers)))
            self.joint_accuracy_tracker.update_state(ops.cast(joint, "float32"), sample_weight=joint_weight)
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def check_data(self, x, y=None, require_all_labels=True, labeled=True):
        """Validates images (shape, finite, inside `input_range`) and, unless
        None, their labels; a `tf.data.Dataset` by its element structure
        (`x` alone is enough with `labeled=False`, as for `predict`)."""
        if self.example_shape is None or x is None:
            return
        if isinstance(x, tf.data.Dataset):
            validation.check_dataset_spec(x, self.tasks, self.example_shape, labeled=labeled)
        elif isinstance(x, (np.ndarray, tf.Tensor)):
            x = validation.check_images(x, self.example_shape)
            validation.check_value_range(x, self.input_range)
            if y is not None:
                validation.check_labels(y, self.tasks, x.shape[0], require_all=require_all_labels)

    # --- config ----------------------------------------------------------
    def get_config(self):
        return {
            "name": self.name,
            "trainable": self.trainable,
            "tasks": [t.get_config() for t in self.tasks],
            "encoder": _serialize(self.encoder),
            "decoders": _serialize(self.decoders),
            "bottleneck": None if self.bottleneck is None else _serialize(self.bottleneck),
            "weighting": _serialize(self.weighting),
            "input_shape": None if self.example_shape is None else list(self.example_shape),
            "adversarial": None if self.adversarial is None else keras.saving.serialize_keras_object(self.adversarial),
            "input_range": None if self.input_range is None else list(self.input_range),
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["tasks"] = [Task.from_config(t) for t in config["tasks"]]
        for key in ("encoder", "decoders", "weighting"):
            config[key] = _deserialize(config[key])
        if config.get("bottleneck") is not None:
            config["bottleneck"] = _deserialize(config["bottleneck"])
        return cls(**config)
