"""tf_mtvib: robust multi-task learning with variational representations."""

from tf_mtvib import (
    _env,  # noqa: F401  (must precede the TensorFlow import)
    evaluation,
    training,  # noqa: F401  (registers AdversarialTraining for loading saved models)
)
from tf_mtvib.layers import (
    AmortizedClassifier,
    BayesianDense,
    FixedWeighting,
    GaussianBottleneck,
    GumbelSoftmaxMixturePrior,
    UncertaintyWeighting,
)
from tf_mtvib.models import (
    SYSTEMS,
    VMTL,
    MultiDomainClassifier,
    MultiTaskVIB,
    build_gs,
    build_model,
    build_mtvib,
    build_stl,
    build_stvib,
    build_uwl,
    build_vmtl_system,
    small_alexnet,
)
from tf_mtvib.tasks import Task, multi_digit_tasks

__version__ = "0.1.0"
