"""tf.distribute and mixed precision for user scripts and the CLI.

Build and compile the model inside `strategy.scope()`, and batch the data
with the *global* batch size: Keras splits each batch over the replicas, and
`MultiTaskVIB.compute_loss` divides its per-replica means by the number of
replicas, so the summed gradients are those of the global batch.

    strategy = tf_mtvib.distribute.get_strategy("mirrored")
    with strategy.scope():
        model = tf_mtvib.build_mtvib(tasks)
        model.compile(optimizer="adam")
    model.fit(make_dataset(x, y, batch_size=global_batch), epochs=...)

Batch normalization statistics are computed per replica, as in Keras.

Several machines (`MultiWorkerMirroredStrategy`, configured by `TF_CONFIG`):
create the strategy before any other TensorFlow op, give every worker the
same data (Keras shards it), and let only the chief write files:

    strategy = tf_mtvib.distribute.get_strategy("multiworker")  # first
    folder = tf_mtvib.distribute.write_folder("runs/x", strategy)
    ...
    model.save(os.path.join(folder, "model.keras"))  # every worker saves

`write_folder` is the folder itself on the chief and a temporary folder,
removed when the process exits, on the other workers (the pattern of the
Keras multi-worker guide).
"""

import atexit
import hashlib
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
    """`tf.distribute.MultiWorkerMirroredStrategy` whose `reduce` takes what
    Keras 3's `fit` gives it (keras-team/keras#20585, Keras 3.15):

    - a nested structure (the first batch, reduced to build the model), which
      TensorFlow's collective reduce refuses ("Attempt to convert a value
      (PerReplica ...)"): reduced leaf by leaf;
    - scalar logs with `axis=0` ("Invalid reduction dimension 0 for input
      with 0 dimensions"): a scalar has no axis to reduce within a replica,
      so it is reduced across replicas only (`axis=None`).
    """

    def reduce(self, reduce_op, value, axis):
        if tf.nest.is_nested(value):
            return tf.nest.map_structure(lambda leaf: self.reduce(reduce_op, leaf, axis), value)
        if axis is not None and all(
            tf.convert_to_tensor(v).shape.rank == 0 for v in self.experimental_local_results(value)
        ):
            axis = None
        return super().reduce(reduce_op, value, axis)



def scale_to_replicas(value):
    """A loss averaged over one replica's batch, divided by the number of
    replicas in sync: Keras sums the per-replica losses, so this makes the
    sum the mean over the global batch, as Keras' own reductions do."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return value / replicas if replicas > 1 else value

def get_strategy(name="auto", devices=None):
    """Returns a `tf.distribute.Strategy`.

    Args:
        name: 'auto' (MirroredStrategy over all GPUs when there are several,
            else the default strategy), 'default' (no distribution),
            'mirrored' (MirroredStrategy over `devices`, default all GPUs, or
            all logical CPUs when there is no GPU), 'multiworker'
            (`MultiWorkerMirroredStrategy`, configured by `TF_CONFIG`).
        devices: device names for 'mirrored'.
    """
    if name not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {STRATEGIES}, received strategy={name!r}.")
    if devices is not None and name != "mirrored":
        raise ValueError(f"`devices` applies to strategy='mirrored' only, received strategy={name!r}.")
    if name == "multiworker":
        # Listing logical devices would initialize TensorFlow's context, after
        # which collective ops can no longer be configured.
        return MultiWorkerMirroredStrategy()
    if name == "auto":
        name = "mirrored" if len(tf.config.list_physical_devices("GPU")) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    gpus = tf.config.list_logical_devices("GPU")
    if devices is None:
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


def worker_role(strategy):
    """`(task_type, task_id)` of this process in a multi-worker cluster, or
    `(None, None)` for a single process."""
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None or not resolver.cluster_spec().as_dict():
        return None, None
    return resolver.task_type, resolver.task_id


def is_chief(strategy):
    """True on the process that writes files: a single process, the 'chief'
    task, or worker 0 of a cluster without a chief."""
    task_type, task_id = worker_role(strategy)
    return task_type in (None, "chief") or (task_type == "worker" and task_id == 0)


def write_folder(folder, strategy):
    """Where this process writes the files meant for `folder`: `folder` on the
    chief; on any other worker a fresh temporary folder, deleted when the
    process exits, so that workers never overwrite the chief's files."""
    if is_chief(strategy):
        return folder
    task_type, task_id = worker_role(strategy)
    temporary = tempfile.mkdtemp(prefix=f"tf_mtvib-{task_type}{task_id}-")
    atexit.register(shutil.rmtree, temporary, ignore_errors=True)
    return temporary


def shard_by_data(dataset):
    """`dataset` with auto-sharding by elements: every worker reads the same
    data and keeps its share of each global batch (the in-memory arrays of
    this package have no files to shard by)."""
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def weights_fingerprint(model):
    """First 16 hex digits of the SHA-256 of `model`'s trainable weights: the
    workers of one multi-worker run print the same value. (Batch-norm moving
    statistics are left out: as in Keras, each replica keeps its own.)"""
    digest = hashlib.sha256()
    for weight in model.trainable_weights:
        digest.update(np.ascontiguousarray(keras.ops.convert_to_numpy(weight)).tobytes())
    return digest.hexdigest()[:16]


def check_same_on_all_workers(strategy, value, what):
    """Raises ValueError on every worker unless all workers hold the same
    number `value` (one all-reduce; nothing to do for a single process).
    Catches workers that would otherwise wait on each other forever, e.g.
    ones that resumed from different epochs."""
    if worker_role(strategy)[0] is None:
        return
    local = tf.constant([float(value), float(value) ** 2], tf.float64)
    mean, mean_square = strategy.reduce("MEAN", local, axis=None).numpy()
    if mean_square != mean**2:
        raise ValueError(f"The workers disagree on {what}: this one has {value}, the mean over workers is {mean}.")


def split_cpu(num_devices):
    """Splits the physical CPU into `num_devices` logical devices, so that
    MirroredStrategy can be tried on a machine without GPUs. Must run before
    TensorFlow initializes its devices (before the first op)."""
    if not isinstance(num_devices, int) or num_devices < 1:
        raise ValueError(f"`num_devices` must be a positive int, received num_devices={num_devices!r}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * num_devices
    )
    return [d.name for d in tf.config.list_logical_devices("CPU")]


# `precision` names and the Keras dtype policies they stand for.
PRECISIONS = {"float32": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def set_precision(precision):
    """Sets Keras' global dtype policy for the models built afterwards.

    Args:
        precision: "float32"; "bfloat16" (mixed_bfloat16: for CPUs with
            AVX512_BF16 or AMX, elsewhere emulated and slow); or "float16"
            (mixed_float16: GPUs with tensor cores; `compile` wraps the
            optimizer in a loss-scale optimizer). Under both mixed policies
            the models compute in the low precision with float32 variables,
            and keep their logits, KL and task weighting in float32.

    Returns:
        The name of the policy now in force.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"`precision` must be one of {sorted(PRECISIONS)}, received precision={precision!r}.")
    keras.mixed_precision.set_global_policy(PRECISIONS[precision])
    return keras.mixed_precision.global_policy().name


def set_mixed_precision(enabled):
    """`set_precision("float16")`, or back to "float32" when `enabled` is false."""
    return set_precision("float16" if enabled else "float32")


def float32_output_dtype():
    """`'float32'` under a mixed policy (for logits and losses), else `None`."""
    policy = keras.mixed_precision.global_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None
