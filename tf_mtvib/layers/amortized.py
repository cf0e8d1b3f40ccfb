"""Amortized classifier weights generated from class-mean features (VMTL-AC, Eq. 12)."""

import keras

from tf_mtvib.layers.gaussian import bounded_scale


@keras.saving.register_keras_serializable(package="tf_mtvib")
class AmortizedClassifier(keras.layers.Layer):
    """Inference network `m_c -> q(w_c) = N(mu(m_c), diag(sigma(m_c)^2))`.

    Maps the mean code `m_c (..., dim)` of the examples of class c to the
    parameters of that class's weight vector `w_c (..., dim)`; the logit of
    class c for a code z is `z . w_c`. One network serves every class and task
    (the cost is shared across classes, VMTL Sec. 2.3).

    `call(class_means)` returns `(loc, scale)`, each `class_means.shape`.

    Args:
        hidden_units: width of the hidden ELU layer. Default value: `256`.
        scale_shift: the initial sigma is about `softplus(-scale_shift)`.
            Default value: `3.0` (sigma ~ 0.05).
        max_scale: upper bound of sigma, or `None` (see `GaussianBottleneck`).
    """

    def __init__(self, hidden_units=256, scale_shift=3.0, max_scale=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(hidden_units, int) or hidden_units < 1:
            raise ValueError(f"`hidden_units` must be a positive int, received hidden_units={hidden_units!r}.")
        self.hidden_units = hidden_units
        self.scale_shift = float(scale_shift)
        self.max_scale = max_scale
        self.hidden = keras.layers.Dense(hidden_units, activation="elu", name="hidden")
        self.loc_dense = None
        self.scale_dense = None

    def build(self, input_shape):
        dim = input_shape[-1]
        self.hidden.build(input_shape)
        self.loc_dense = keras.layers.Dense(dim, name="loc")
        self.scale_dense = keras.layers.Dense(dim, name="pre_scale")
        self.loc_dense.build(tuple(input_shape[:-1]) + (self.hidden_units,))
        self.scale_dense.build(tuple(input_shape[:-1]) + (self.hidden_units,))

    def call(self, class_means, training=None):
        hidden = self.hidden(class_means)
        # A residual mean: the class mean itself is a sensible first weight vector.
        loc = class_means + self.loc_dense(hidden)
        return loc, bounded_scale(self.scale_dense(hidden), self.scale_shift, self.max_scale)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape), tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "hidden_units": self.hidden_units, "scale_shift": self.scale_shift,
                "max_scale": self.max_scale}
