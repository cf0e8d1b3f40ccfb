"""The TFDS builders: registered by `import tf_mtvib.datasets`, prepared offline
from local files, equal to the package's own loaders."""

import numpy as np
import tensorflow_datasets as tfds
from test_data import _write_mtfl_fixture

import tf_mtvib.datasets as tm_datasets
from tf_mtvib.data.domains import load_domains
from tf_mtvib.data.pipeline import load_task_data


def _download_config(folder):
    return {"download_config": tfds.download.DownloadConfig(manual_dir=str(folder))}


def test_import_registers_the_builders():
    assert {"multi_mnist", "multi_fashion_mnist", "mtfl", "vmtl_domains"} <= set(tfds.list_builders())
    features = tfds.builder("multi_fashion_mnist", data_dir="/nonexistent").info.features
    assert features["image"].shape == (36, 36, 1) and features["image"].dtype == np.uint8
    assert features["top_left"].num_classes == 10 and features["bottom_right"].num_classes == 10


def test_multi_mnist_splits_equal_load_task_data_pixel_for_pixel(data_dir, tmp_path):
    config = tm_datasets.MultiConfig(seed=3, num_train=300, num_test=100)
    splits, info = tfds.load(
        "multi_mnist", builder_kwargs={"config": config}, split=["train", "test"], data_dir=str(tmp_path / "tfds"),
        batch_size=-1, with_info=True, download_and_prepare_kwargs=_download_config(data_dir),
    )
    reference = load_task_data("multimnist", data_dir=data_dir, cache_dir=str(tmp_path / "npz"),
                               num_train=300, num_test=100, seed=3)
    for prepared, (x, y) in zip(tfds.as_numpy(splits), [(reference.x_train, reference.y_train),
                                                          (reference.x_test, reference.y_test)]):
        assert prepared["image"].dtype == np.uint8 and prepared["image"].shape == x.shape
        np.testing.assert_array_equal(prepared["image"].astype(np.float32) / 255.0, x)
        for task in ("top_left", "bottom_right"):
            np.testing.assert_array_equal(prepared[task], y[task])
    assert info.metadata["data_sources"] == reference.sources


def test_vmtl_domains_and_mtfl_builders_read_the_package_loaders(data_dir, tmp_path):
    config = tm_datasets.DomainsConfig(domains=("rotated", "digits"), examples_per_task=100, seed=1)
    test = tfds.as_numpy(tfds.load("vmtl_domains", builder_kwargs={"config": config}, split="test", batch_size=-1,
                                   data_dir=str(tmp_path / "tfds"),
                                   download_and_prepare_kwargs=_download_config(data_dir)))
    reference = load_domains(("rotated", "digits"), examples_per_task=100, data_dir=data_dir, seed=1)
    np.testing.assert_array_equal(test["image"].astype(np.float32) / 255.0, reference.x_test)
    np.testing.assert_array_equal(test["task"], reference.task_test)
    np.testing.assert_array_equal(test["label"], reference.y_test)

    (tmp_path / "mtfl" / "lfw_5590").mkdir(parents=True)
    _write_mtfl_fixture(tmp_path / "mtfl", {"train": [(1, 2, 2, 3), (2, 1, 1, 5)], "test": [(2, 2, 1, 4)]})
    train = tfds.as_numpy(tfds.load("mtfl", split="train", batch_size=-1, data_dir=str(tmp_path / "tfds"),
                                    download_and_prepare_kwargs=_download_config(tmp_path / "mtfl")))
    assert train["image"].shape == (2, 150, 150, 3)
    np.testing.assert_array_equal(train["head_pose"], [2, 4])
    np.testing.assert_allclose(train["landmarks"][0, :2], [50 * 150 / 250, 100 * 150 / 250])
