"""The Small AlexNet encoders of MTVIB Tables I (36x36) and II (150x150).

Both use two blocks of Conv 64 + BN + ReLU + MaxPool 2x2 with 'valid'
padding, which gives the flatten sizes of the tables:
36 -> 34 -> 17 -> 15 -> 7, 7 * 7 * 64 = 3136 (3x3 kernels, stride 1);
150 -> 73 -> 36 -> 16 -> 8, 8 * 8 * 64 = 4096 (5x5 kernels, stride 2).
"""

import keras

from tf_mtvib.distribute import float32_output_dtype
from tf_mtvib.layers.normalization import FusedBatchNormalization

# PyTorch's BatchNorm default (momentum 0.1 there, 0.9 in Keras' convention):
# Keras' 0.99 leaves the moving statistics near their initial values for the
# first few hundred steps, so a short run evaluates far below its training
# accuracy.
BN_MOMENTUM = 0.9

# Table I for inputs up to this side length, Table II above it.
_TABLE_I_MAX_SIDE = 64
_CONV_SETTINGS = {"I": {"kernel_size": 3, "strides": 1}, "II": {"kernel_size": 5, "strides": 2}}


def paper_table_for(input_shape):
    """'I' (MultiMNIST / MultiFashion, 36x36) or 'II' (MTFL, 150x150)."""
    _check_image_shape(input_shape)
    return "I" if max(input_shape[:2]) <= _TABLE_I_MAX_SIDE else "II"


def _check_image_shape(input_shape):
    if len(input_shape) != 3 or any(not isinstance(d, int) or d < 1 for d in input_shape):
        raise ValueError(
            "`input_shape` must be (height, width, channels) of positive ints, "
            f"received input_shape={input_shape!r}."
        )


def dense_bn_relu(units, name):
    """FC + BN + ReLU, the building block of every table row 'FC a x b + BN + ReLU'."""
    return [
        keras.layers.Dense(units, name=f"{name}_dense"),
        keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=f"{name}_bn"),
        keras.layers.ReLU(name=f"{name}_relu"),
    ]


def small_alexnet(input_shape, dense_units=(384, 192), table=None, name="small_alexnet"):
    """The convolutional stem of Table I/II followed by FC + BN + ReLU layers.

    Args:
        input_shape: `(height, width, channels)`.
        dense_units: widths of the FC + BN + ReLU layers after the flatten;
            `(384, 192)` is the single-task Small AlexNet, `(384,)` the shared
            part of GS / UWL, `(1024, 1024, 1024)` the STVIB / MTVIB encoder.
        table: 'I' or 'II'; default chosen from the input size.

    Returns:
        A `keras.Sequential` mapping `(batch, *input_shape)` to
        `(batch, dense_units[-1])` (or the flattened features).
    """
    table = table or paper_table_for(input_shape)
    if table not in _CONV_SETTINGS:
        raise ValueError(f"`table` must be 'I' or 'II', received table={table!r}.")
    _check_image_shape(input_shape)
    conv = _CONV_SETTINGS[table]
    stack = [keras.Input(shape=tuple(input_shape))]
    for i in (1, 2):
        stack += [
            keras.layers.Conv2D(64, padding="valid", name=f"conv{i}", **conv),
            FusedBatchNormalization(momentum=BN_MOMENTUM, name=f"conv{i}_bn"),
            keras.layers.ReLU(name=f"conv{i}_relu"),
            keras.layers.MaxPooling2D(2, name=f"pool{i}"),
        ]
    stack.append(keras.layers.Flatten(name="flatten"))
    for i, units in enumerate(dense_units, start=1):
        stack += dense_bn_relu(units, f"fc{i}")
    return keras.Sequential(stack, name=name)


def mlp(input_dim, units=(256, 256), name="mlp"):
    """A feature MLP of FC + BN + ReLU layers, for pre-extracted features."""
    stack = [keras.Input(shape=(input_dim,))]
    for i, n in enumerate(units, start=1):
        stack += dense_bn_relu(n, f"fc{i}")
    return keras.Sequential(stack, name=name)


def task_decoder(task, hidden_units, name):
    """Task head: FC + BN + ReLU per hidden width, then the output layer.

    Classification heads emit logits `(batch, num_classes)`; regression heads
    emit `(batch, *task.output_shape)`.
    """
    stack = []
    for i, units in enumerate(hidden_units, start=1):
        stack += dense_bn_relu(units, f"fc{i}")
    # Under a mixed policy the outputs (and so the losses) stay float32.
    output_dtype = float32_output_dtype()
    stack.append(
        keras.layers.Dense(
            task.output_units, name="logits" if task.is_classification else "output", dtype=output_dtype
        )
    )
    if len(task.output_shape) > 1:
        stack.append(keras.layers.Reshape(task.output_shape, name="reshape", dtype=output_dtype))
    return keras.Sequential(stack, name=name)
