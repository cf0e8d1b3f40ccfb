"""Model family adapters: what the commands do differently per family.

A run's family follows from its data set (`--dataset domains`: the VMTL
family; the others: the MTVIB family), so a finished run's config.json says
which adapter reads it.
"""

from tf_mtvib.cli.errors import CommandError
from tf_mtvib.cli.families.base import Evaluation, ModelFamily
from tf_mtvib.cli.families.mtvib import PAPER_SETTINGS, MTVIBFamily
from tf_mtvib.cli.families.vmtl import VMTLFamily

MTVIB = MTVIBFamily()
VMTL = VMTLFamily()
FAMILIES = (MTVIB, VMTL)
DATASETS = tuple(d for family in FAMILIES for d in family.datasets)

__all__ = ["DATASETS", "FAMILIES", "MTVIB", "PAPER_SETTINGS", "VMTL", "Evaluation", "ModelFamily", "for_config",
           "for_dataset"]


def for_dataset(dataset):
    for family in FAMILIES:
        if dataset in family.datasets:
            return family
    raise CommandError(f"no model family trains on dataset {dataset!r}; the data sets are {DATASETS}.")


def for_config(config):
    """The family of a run from its config.json."""
    return for_dataset(config.get("dataset"))
