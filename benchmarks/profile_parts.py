"""Where an MTVIB training step spends its time: times one step (batch 200,
forward + backward + Adam) of parts of the Table I model.

    python benchmarks/profile_parts.py
"""

import time

import tf_mtvib  # noqa: F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras
import tensorflow as tf

import tf_mtvib as tm
from tf_mtvib.layers import FusedBatchNormalization
from tf_mtvib.models import backbones

BATCH = 200


def step_milliseconds(model, inputs, repeats=20):
    optimizer = keras.optimizers.Adam(1e-4)

    @tf.function
    def step():
        with tf.GradientTape() as tape:
            outputs = model(inputs, training=True)
            loss = tf.add_n([tf.reduce_mean(tf.square(o)) for o in tf.nest.flatten(outputs)])
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        return loss

    step(), step()
    start = time.perf_counter()
    for _ in range(repeats):
        loss = step()
    loss.numpy()
    return 1000 * (time.perf_counter() - start) / repeats


def stem(normalization):
    layers = [keras.Input((36, 36, 1))]
    for i in (1, 2):
        layers.append(keras.layers.Conv2D(64, 3, name=f"conv{i}"))
        if normalization is not None:
            layers.append(normalization(momentum=0.9))
        layers += [keras.layers.ReLU(), keras.layers.MaxPooling2D(2)]
    return keras.Sequential(layers + [keras.layers.Flatten()])


def main():
    images = tf.random.uniform((BATCH, 36, 36, 1))
    parts = {
        "whole MTVIB (as built)": (tm.build_mtvib(tm.multi_digit_tasks(), seed=0), images),
        "conv stem, Keras BatchNormalization": (stem(keras.layers.BatchNormalization), images),
        "conv stem, FusedBatchNormalization": (stem(FusedBatchNormalization), images),
        "conv stem without BN": (stem(None), images),
        "FC 3136-1024-1024-1024 + BN + ReLU": (
            backbones.mlp(3136, (1024, 1024, 1024)), tf.random.uniform((BATCH, 3136))
        ),
    }
    for name, (model, inputs) in parts.items():
        ms = step_milliseconds(model, inputs)
        print(f"{name:40s} {ms:7.1f} ms/step  {BATCH / ms * 1000:7.0f} images/s", flush=True)


if __name__ == "__main__":
    main()
