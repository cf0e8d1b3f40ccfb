from tf_mtvib.layers.amortized import AmortizedClassifier
from tf_mtvib.layers.bayesian import BayesianDense
from tf_mtvib.layers.bottleneck import GaussianBottleneck
from tf_mtvib.layers.normalization import FusedBatchNormalization
from tf_mtvib.layers.priors import (
    GumbelSoftmaxMixturePrior,
    LearnedWeightsMixturePrior,
    MeanMixturePrior,
    kl_to_mixture,
    kl_to_weighted_sum,
)
from tf_mtvib.layers.weighting import FixedWeighting, UncertaintyWeighting, ValueRange
