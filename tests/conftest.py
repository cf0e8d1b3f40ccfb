import os
import pathlib

import pytest

import tf_mtvib  # noqa: F401  (process settings before TensorFlow)

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def data_dir():
    """Real MNIST / Fashion-MNIST IDX files: $TF_MTVIB_DATA or ../shared/data."""
    folder = os.environ.get("TF_MTVIB_DATA") or str(SHARED_DATA)
    if not os.path.isdir(os.path.join(folder, "mnist")):
        pytest.skip(f"real MNIST IDX files not found under {folder}")
    return folder


@pytest.fixture(scope="session")
def sample_data():
    from tf_mtvib.data.pipeline import load_task_data

    return load_task_data("sample")
