import os
import pathlib

import pytest

import tf_mtvib  # noqa: F401  (process settings before TensorFlow)
from tf_mtvib import distribute

# Two logical CPUs, so that MirroredStrategy runs with two replicas here; it
# must happen before TensorFlow initializes its devices.
distribute.split_cpu(2)

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


@pytest.fixture(scope="session")
def trained_mtvib(sample_data):
    """MTVIB after one epoch on the embedded sample (about 70 % per task), with
    200 test images: `(model, x, y)`."""
    import keras

    import tf_mtvib as tm
    from tf_mtvib.data.pipeline import make_dataset

    keras.utils.set_random_seed(0)
    model = tm.build_mtvib(sample_data.tasks, seed=0)
    model.compile(keras.optimizers.Adam(1e-3))
    model.fit(make_dataset(sample_data.x_train, sample_data.y_train, 50, shuffle=True, seed=0), epochs=1, verbose=0)
    x = sample_data.x_test[:200]
    y = {k: v[:200] for k, v in sample_data.y_test.items()}
    return model, x, y
