"""Batch normalization on TensorFlow's fused kernel for convolutional feature maps."""

import keras
import tensorflow as tf

# The input dtypes FusedBatchNormV3 takes with float32 scale and offset.
_FUSED_DTYPES = (tf.float32, tf.bfloat16, tf.float16)


@keras.saving.register_keras_serializable(package="tf_mtvib")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` that trains through `FusedBatchNormV3`.

    Keras 3 normalizes with separate moment, subtract and scale ops; on a
    4-D NHWC batch in training this layer calls TensorFlow's fused kernel
    instead, which made the Table I convolutional stem's training step about
    25 % faster on the 2-core development CPU (benchmarks/RESULTS.md). Under
    a mixed policy the kernel takes the bfloat16 / float16 feature maps as
    they are, with float32 scale, offset and statistics; Keras' own path
    casts each map to float32 and back, which made mixed_bfloat16 training
    slower than float32 on CPUs with bfloat16 dot products. Weights, config
    and every other case (inference, masks, renorm, synchronized statistics,
    other ranks, float64) are Keras' own. The fused kernel's variance for the
    moving average carries Bessel's correction n / (n - 1), with
    n = batch x height x width.
    """

    def _use_fused(self, inputs, training, mask):
        return (
            training
            and self.trainable
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and self.axis in (-1, 3)
            and inputs.dtype in _FUSED_DTYPES
        )

    def call(self, inputs, training=None, mask=None):
        if not self._use_fused(inputs, training, mask):
            return super().call(inputs, training=training, mask=mask)
        outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
            inputs,
            tf.cast(self.gamma, tf.float32),
            tf.cast(self.beta, tf.float32),
            epsilon=self.epsilon,
            data_format="NHWC",
            is_training=True,
        )
        self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
        self.moving_variance.assign(
            self.moving_variance * self.momentum + variance * (1.0 - self.momentum)
        )
        return outputs
