from tf_mtvib.layers.bottleneck import GaussianBottleneck
from tf_mtvib.layers.weighting import FixedWeighting, UncertaintyWeighting, ValueRange
from tf_mtvib.layers.normalization import FusedBatchNormalization
