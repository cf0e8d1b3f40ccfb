from tf_mtvib.training.adversarial import AdversarialTraining
from tf_mtvib.training.callbacks import (
    EpochCheckpoint,
    KLAnnealing,
    StopOnNonFiniteLoss,
    TemperatureAnnealing,
    TrainingDiverged,
)
