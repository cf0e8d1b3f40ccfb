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
"""

import keras
import tensorflow as tf

STRATEGIES = ("auto", "default", "mirrored", "multiworker")


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
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        name = "mirrored" if len(gpus) > 1 else "default"
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    if devices is None:
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices)


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


def set_mixed_precision(enabled):
    """Sets Keras' global dtype policy to 'mixed_float16' (or back to
    'float32'); models built afterwards compute in float16 with float32
    variables, keep their logits, KL and task weighting in float32, and
    `compile` wraps the optimizer in a loss-scale optimizer. Worth it on GPUs
    with tensor cores; on CPUs it is slower."""
    keras.mixed_precision.set_global_policy("mixed_float16" if enabled else "float32")
    return keras.mixed_precision.global_policy().name


def float32_output_dtype():
    """`'float32'` under a mixed policy (for logits and losses), else `None`."""
    policy = keras.mixed_precision.global_policy()
    return "float32" if policy.compute_dtype != policy.variable_dtype else None
