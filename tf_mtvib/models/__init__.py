from tf_mtvib.models.backbones import mlp, small_alexnet, task_decoder
from tf_mtvib.models.mtvib import MultiTaskVIB
from tf_mtvib.models.systems import (
    SYSTEMS,
    build_gs,
    build_model,
    build_mtvib,
    build_stl,
    build_stvib,
    build_uwl,
)
from tf_mtvib.models.vmtl import VMTL, VMTL_SYSTEMS, MultiDomainClassifier, build_vmtl_system
