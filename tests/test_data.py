import gzip
import os
import pathlib

import numpy as np
import pytest
from PIL import Image

from tf_mtvib.data import atomic, idx, mtfl, multimnist
from tf_mtvib.data.pipeline import load_task_data, make_dataset


def _idx_bytes(array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return header + array.astype(np.uint8).tobytes()


def test_real_idx_files_load_with_verified_checksums(data_dir):
    data = idx.load_mnist_like("mnist", data_dir, allow_download=False)
    x, y = data["train"]
    assert x.shape == (60000, 28, 28) and x.dtype == np.uint8 and y.shape == (60000,)
    assert data["test"][0].shape == (10000, 28, 28)
    assert set(np.unique(y)) == set(range(10))
    fashion = idx.load_mnist_like("fashion_mnist", data_dir, allow_download=False)
    assert fashion["test"][1].shape == (10000,)


def test_raw_and_gzip_idx_parse_alike_and_corruption_is_named(tmp_path):
    array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    raw = tmp_path / "x-idx3-ubyte"
    raw.write_bytes(_idx_bytes(array))
    packed = tmp_path / "x-idx3-ubyte.gz"
    packed.write_bytes(gzip.compress(_idx_bytes(array)))
    np.testing.assert_array_equal(idx.read_idx(raw), array)
    np.testing.assert_array_equal(idx.read_idx(packed), array)
    truncated = tmp_path / "t"
    truncated.write_bytes(_idx_bytes(array)[:-1])
    with pytest.raises(ValueError, match="corrupt: header says shape"):
        idx.read_idx(truncated)
    bad_magic = tmp_path / "m"
    bad_magic.write_bytes(b"\x01\x02" + _idx_bytes(array)[2:])
    with pytest.raises(ValueError, match="magic"):
        idx.read_idx(bad_magic)
    broken_gzip = tmp_path / "g.gz"
    broken_gzip.write_bytes(gzip.compress(_idx_bytes(array))[:-8])
    with pytest.raises(ValueError, match="corrupt gzip"):
        idx.read_idx(broken_gzip)


def test_known_file_with_wrong_content_fails_its_checksum(tmp_path):
    fake = tmp_path / "train-labels-idx1-ubyte"
    fake.write_bytes(_idx_bytes(np.zeros(5, np.uint8)))
    with pytest.raises(ValueError, match="SHA-256"):
        idx.read_idx(fake, dataset="mnist")


def test_without_data_dir_the_fallback_chain_is_listed(tmp_path, monkeypatch):
    monkeypatch.setenv("TF_MTVIB_DATA", str(tmp_path / "env"))
    with pytest.raises(idx.DataNotFoundError) as error:
        idx.load_mnist_like("fashion_mnist", allow_download=False)
    message = str(error.value)
    for place in ("env", "TF_MTVIB_DATA", "/usr/share/datasets/fashion-mnist"):
        assert place in message


def test_given_data_dir_is_the_only_source_tried(data_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("TF_MTVIB_DATA", data_dir)  # holds real files, must not be used
    (tmp_path / "given").mkdir()
    (tmp_path / "given" / "train-images-idx3-ubyte.gz").write_bytes(b"")
    with pytest.raises(idx.DataNotFoundError) as error:
        idx.load_mnist_like("mnist", tmp_path / "given", allow_download=True)
    message = str(error.value)
    assert "given" in message and "train-labels-idx1-ubyte" in message
    assert data_dir not in message


def _copy_with_truncated_train_images(data_dir, folder):
    folder.mkdir()
    for path in (pathlib.Path(data_dir) / "mnist").iterdir():
        content = path.read_bytes()
        if path.name.startswith("train-images"):
            content = content[: len(content) // 2]
        (folder / path.name).write_bytes(content)


def test_environment_variable_points_at_the_data(data_dir, monkeypatch):
    monkeypatch.setenv("TF_MTVIB_DATA", data_dir)
    assert idx.load_mnist_like("mnist", allow_download=False)["test"][0].shape == (10000, 28, 28)


def test_pairs_have_different_labels_shape_range_and_repeat_with_seed(data_dir):
    source = idx.load_mnist_like("mnist", data_dir, allow_download=False)["test"]
    x, y = multimnist.overlay_pairs(*source, num_examples=3000, seed=11)
    assert x.shape == (3000, 36, 36) and x.dtype == np.uint8 and y.shape == (3000, 2)
    assert np.all(y[:, 0] != y[:, 1])
    assert x.max() == 255 and x.min() == 0
    x2, y2 = multimnist.overlay_pairs(*source, num_examples=3000, seed=11)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    x3, _ = multimnist.overlay_pairs(*source, num_examples=3000, seed=12)
    assert not np.array_equal(x, x3)


def test_objects_sit_in_their_corners_shifted_at_most_four_pixels():
    # Class 0 is a dot of 100 at the centre of a 28x28 image, class 1 a dot of 200.
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 14, 14], images[1, 14, 14] = 100, 200
    x, y = multimnist.overlay_pairs(images, np.array([0, 1]), num_examples=500, seed=0)
    shifts = set()
    for composite, labels in zip(x, y):
        for label, low in zip(labels, (14, 18)):
            rows, cols = np.nonzero(composite == (100 if label == 0 else 200))
            assert len(rows) == 1
            assert low <= rows[0] <= low + 4 and low <= cols[0] <= low + 4
            shifts.add((rows[0] - low, cols[0] - low))
    assert len(shifts) == 25  # every shift in [0, 4]^2 occurs


def test_overlap_takes_the_maximum():
    images = np.zeros((2, 28, 28), np.uint8)
    images[0, 20:, 20:] = 50
    images[1, :8, :8] = 80
    x, _ = multimnist.overlay_pairs(images, np.array([0, 1]), num_examples=50, seed=1)
    assert set(np.unique(x)) <= {0, 50, 80}
    assert (x == 80).sum() > 0


def test_generated_set_is_cached_atomically_under_the_digests_of_its_sources(data_dir, tmp_path):
    cache = tmp_path / "cache"
    first, source = multimnist.load_multi(
        "multifashion", data_dir, cache, num_train=200, num_test=50, seed=3, allow_download=False
    )
    files = os.listdir(cache)
    assert len(files) == 1 and files[0].endswith(".npz")
    assert source.origin == "data_dir" and source.folder == os.path.join(data_dir, "fashion-mnist")
    assert source.sha256["t10k-labels-idx1-ubyte.gz"] == idx.file_sha256(
        os.path.join(data_dir, "fashion-mnist", "t10k-labels-idx1-ubyte.gz"))
    again, _ = multimnist.load_multi(
        "multifashion", data_dir, cache, num_train=200, num_test=50, seed=3, allow_download=False
    )
    np.testing.assert_array_equal(first["train"][0], again["train"][0])
    assert first["test"][0].shape == (50, 36, 36) and os.listdir(cache) == files
    with pytest.raises(idx.DataNotFoundError, match="nonexistent"):
        multimnist.load_multi(
            "multifashion", "/nonexistent", cache, num_train=200, num_test=50, seed=3, allow_download=False
        )


def test_corrupt_source_file_is_named_even_when_a_cache_exists(data_dir, tmp_path):
    cache = tmp_path / "cache"
    multimnist.load_multi("multimnist", data_dir, cache, num_train=20, num_test=10, allow_download=False)
    _copy_with_truncated_train_images(data_dir, tmp_path / "broken")
    with pytest.raises(ValueError, match="broken/train-images-idx3-ubyte.gz is a corrupt gzip"):
        multimnist.load_multi("multimnist", tmp_path / "broken", cache, num_train=20, num_test=10, allow_download=False)
    assert len(os.listdir(cache)) == 1


def test_interrupted_write_leaves_no_file(tmp_path):
    target = tmp_path / "out.npz"
    target.write_bytes(b"previous")
    with pytest.raises(KeyboardInterrupt):
        with atomic.atomic_path(target) as tmp:
            with open(tmp, "wb") as f:
                f.write(b"half")
            raise KeyboardInterrupt
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path) == ["out.npz"]


def test_embedded_sample_and_pipeline(sample_data):
    assert sample_data.x_train.shape == (5000, 36, 36, 1) and sample_data.x_test.shape == (1000, 36, 36, 1)
    assert 0.0 <= sample_data.x_train.min() and sample_data.x_train.max() <= 1.0
    assert np.all(sample_data.y_train["top_left"] != sample_data.y_train["bottom_right"])
    x, y = next(iter(make_dataset(sample_data.x_train, sample_data.y_train, 8, shuffle=True, seed=0)))
    assert x.shape == (8, 36, 36, 1) and sorted(y) == ["bottom_right", "top_left"]
    assert y["top_left"].shape == (8,)
    with pytest.raises(ValueError, match="batch_size"):
        make_dataset(sample_data.x_train, sample_data.y_train, 0)
    with pytest.raises(ValueError, match="dataset"):
        load_task_data("cifar")


def _write_mtfl_fixture(root, rows):
    for split, lines in rows.items():
        text = []
        for i, attrs in enumerate(lines):
            name = f"lfw_5590\\{split}_{i}.jpg"
            color = (40 * i % 255, 100, 200)
            Image.new("RGB", (250, 200), color).save(root / "lfw_5590" / f"{split}_{i}.jpg")
            coords = " ".join(str(v) for v in [50, 100, 150, 200, 240, 20, 40, 60, 80, 100])
            text.append(f"{name} {coords} {' '.join(map(str, attrs))}\n")
        (root / {"train": "training.txt", "test": "testing.txt"}[split]).write_text("".join(text))


def test_mtfl_reader_on_a_fixture_in_its_own_format(tmp_path):
    (tmp_path / "lfw_5590").mkdir()
    _write_mtfl_fixture(tmp_path, {"train": [(1, 2, 2, 3), (2, 1, 1, 5), (1, 1, 2, 1)], "test": [(2, 2, 1, 4)]})
    data = mtfl.load_mtfl(tmp_path, split="official")
    images, labels, landmarks = data["train"]
    assert images.shape == (3, 150, 150, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(labels["gender"], [0, 1, 0])
    np.testing.assert_array_equal(labels["head_pose"], [2, 4, 0])
    np.testing.assert_allclose(landmarks[0, :2], [50 * 150 / 250, 100 * 150 / 250])
    np.testing.assert_allclose(landmarks[0, 5], 20 * 150 / 200)
    _write_mtfl_fixture(tmp_path, {"train": [(1, 2, 2, 6)], "test": [(2, 2, 1, 4)]})
    with pytest.raises(ValueError, match="head_pose=6 outside 1..5"):
        mtfl.load_mtfl(tmp_path, split="official")


def test_mtfl_random_split_is_seeded_disjoint_and_honours_both_sizes(tmp_path):
    """MTVIB's protocol: 9,000 / 1,000 drawn at random from the whole data set."""
    (tmp_path / "lfw_5590").mkdir()
    # Every image gets its own attribute tuple, so that labels identify images.
    attributes = [(g, s, e, p) for g in (1, 2) for s in (1, 2) for e in (1, 2) for p in (1, 2, 3, 4, 5)][:12]
    _write_mtfl_fixture(tmp_path, {"train": attributes[:8], "test": attributes[8:]})

    def identities(split):
        labels = split[1]
        return [
            tuple(int(labels[t][i]) + 1 for t in ("gender", "smiling", "glasses", "head_pose"))
            for i in range(len(labels["gender"]))
        ]

    first = mtfl.load_mtfl(tmp_path, num_train=7, num_test=3, seed=0, image_size=8)
    train, test = identities(first["train"]), identities(first["test"])
    assert len(train) == 7 and len(test) == 3 and not set(train) & set(test)
    assert set(train + test) <= set(attributes) and set(test) - set(attributes[8:])  # drawn across both listings
    again = mtfl.load_mtfl(tmp_path, num_train=7, num_test=3, seed=0, image_size=8)
    assert identities(again["train"]) == train and identities(again["test"]) == test
    other = mtfl.load_mtfl(tmp_path, num_train=7, num_test=3, seed=1, image_size=8)
    assert identities(other["test"]) != test
    bundle = load_task_data("mtfl", data_dir=str(tmp_path), num_train=5, num_test=2)
    assert [t.name for t in bundle.tasks] == ["gender", "smiling", "glasses", "head_pose"]
    assert bundle.x_train.shape == (5, 150, 150, 3) and bundle.x_test.shape == (2, 150, 150, 3)
    with pytest.raises(ValueError, match="num_test=1000"):
        mtfl.load_mtfl(tmp_path)  # 12 images cannot hold the paper's 1,000 test images
    with pytest.raises(ValueError, match="split"):
        mtfl.load_mtfl(tmp_path, split="paper")
