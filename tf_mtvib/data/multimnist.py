"""MultiMNIST / MultiFashion (the Pareto MTL recipe used by MTVIB Sec. VI-A).

Each example overlays two source images with different labels on a 36x36
canvas: one at the top-left, one at the bottom-right, each shifted by up to 4
pixels; overlapping pixels take the maximum. The labels are
(top-left class, bottom-right class).
"""

import hashlib
import importlib.resources
import json
import os
import warnings
import zipfile

import numpy as np

from tf_mtvib.data import atomic, idx

CANVAS = 36
MAX_SHIFT = 4
TASK_NAMES = ("top_left", "bottom_right")
SOURCES = {"multimnist": "mnist", "multifashion": "fashion_mnist"}
SAMPLE_FILE = "multimnist_sample.npz"
DEFAULT_SIZES = {"train": 120_000, "test": 10_000}


def overlay_pairs(images, labels, num_examples, seed, canvas=CANVAS, max_shift=MAX_SHIFT):
    """Builds `num_examples` two-object images from single-object ones.

    Args:
        images: uint8 `(n, h, w)` source images with `h, w <= canvas - max_shift`.
        labels: int `(n,)` classes.
        num_examples: how many composites to make.
        seed: seed of the pairing and shifts (same seed, same data).

    Returns:
        `(composites uint8 (num_examples, canvas, canvas), labels int64 (num_examples, 2))`
        with `labels[:, 0] != labels[:, 1]` always.
    """
    images = np.asarray(images)
    labels = np.asarray(labels).astype(np.int64)
    n, h, w = images.shape
    if num_examples < 1:
        raise ValueError(f"`num_examples` must be >= 1, received num_examples={num_examples!r}.")
    if h + 2 * max_shift > canvas + max_shift or w + 2 * max_shift > canvas + max_shift:
        raise ValueError(f"Images of {h}x{w} do not fit a {canvas}x{canvas} canvas with shift {max_shift}.")
    if len(np.unique(labels)) < 2:
        raise ValueError("Pairs need at least two distinct classes in `labels`.")
    rng = np.random.default_rng(seed)
    first = rng.integers(0, n, num_examples)
    second = rng.integers(0, n, num_examples)
    clash = labels[first] == labels[second]
    while clash.any():
        second[clash] = rng.integers(0, n, int(clash.sum()))
        clash = labels[first] == labels[second]
    # Top-left object starts in [0, max_shift], bottom-right object ends in
    # [canvas - max_shift, canvas]: each is shifted by up to max_shift pixels.
    top_left_offsets = rng.integers(0, max_shift + 1, (num_examples, 2))
    far = canvas - h, canvas - w
    bottom_right_offsets = np.stack(
        [far[0] - rng.integers(0, max_shift + 1, num_examples), far[1] - rng.integers(0, max_shift + 1, num_examples)],
        axis=1,
    )
    out = np.zeros((num_examples, canvas, canvas), np.uint8)
    for sources, offsets in ((first, top_left_offsets), (second, bottom_right_offsets)):
        for dy, dx in np.unique(offsets, axis=0):
            rows = np.nonzero((offsets[:, 0] == dy) & (offsets[:, 1] == dx))[0]
            window = out[rows, dy: dy + h, dx: dx + w]
            out[rows, dy: dy + h, dx: dx + w] = np.maximum(window, images[sources[rows]])
    return out, np.stack([labels[first], labels[second]], axis=1)


def default_cache_dir():
    """`$TF_MTVIB_CACHE`, else `~/.cache/tf_mtvib`."""
    return os.environ.get("TF_MTVIB_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tf_mtvib")


def load_multi(name, data_dir=None, cache_dir=None, num_train=None, num_test=None, seed=0, allow_download=True):
    """Loads (generating and caching on first use) MultiMNIST or MultiFashion.

    Args:
        name: 'multimnist' or 'multifashion'.
        data_dir: folder with the source IDX files, the only place looked at
            when given (see `idx.find_source`).
        cache_dir: where the generated .npz is kept. Default value:
            `default_cache_dir()`.
        num_train, num_test: sizes. Default value: 120,000 and 10,000.
        seed: generation seed, recorded in the cache file.

    The cache file's name holds a digest of the recipe and of the SHA-256 of
    every source file, so data generated from other files is never reused.

    Returns:
        `(splits, source)`: `{"train": (x uint8 (n, 36, 36), y int64 (n, 2)), "test": (...)}`
        and the `idx.Source` the images came from.
    """
    if name not in SOURCES:
        raise ValueError(f"`name` must be one of {tuple(SOURCES)}, received name={name!r}.")
    sizes = {"train": num_train or DEFAULT_SIZES["train"], "test": num_test or DEFAULT_SIZES["test"]}
    source = idx.find_source(SOURCES[name], data_dir, allow_download=allow_download)
    recipe = {"name": name, "seed": seed, "canvas": CANVAS, "max_shift": MAX_SHIFT, **sizes, "version": 1,
              "source_sha256": source.record()["sha256"]}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True).encode()).hexdigest()[:16]
    path = os.path.join(cache_dir or default_cache_dir(), f"{name}-{key}.npz")
    if os.path.exists(path):
        cached = _read_cache(path)
        if cached is not None:
            return cached, source
    result = generate(idx.read_source(SOURCES[name], source), sizes, seed)
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez(
                f, recipe=json.dumps(recipe), **{f"{p}_{s}": result[s][i] for s in result for i, p in enumerate("xy")}
            )
    return result, source


def generate(source_splits, sizes, seed):
    """The composites of each split from the source images: the train split
    with seed `2 * seed`, the test split with `2 * seed + 1`.

    Args:
        source_splits: `{"train": (images, labels), "test": (...)}` of MNIST-like data.
        sizes: `{"train": n, "test": n}`.
    """
    return {
        split: overlay_pairs(*source_splits[split], sizes[split], seed=seed * 2 + offset)
        for offset, split in enumerate(("train", "test"))
    }


def _read_cache(path):
    """The cached splits, or None (with a warning naming the file) when the
    file is damaged: a cache is regenerated rather than trusted."""
    try:
        with np.load(path) as cached:
            return {s: (cached[f"x_{s}"], cached[f"y_{s}"]) for s in ("train", "test")}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
        warnings.warn(f"The cache file {path} is damaged ({error}); generating the data set again.", stacklevel=3)
        return None


def load_sample():
    """The MultiMNIST sample shipped with the package (built from real MNIST).

    Returns:
        `{"train": (x uint8 (5000, 36, 36), y (5000, 2)), "test": (x (1000, 36, 36), y (1000, 2))}`.
    """
    ref = importlib.resources.files("tf_mtvib.data").joinpath(SAMPLE_FILE)
    with importlib.resources.as_file(ref) as path, np.load(path) as sample:
        return {s: (sample[f"x_{s}"], sample[f"y_{s}"]) for s in ("train", "test")}


def sample_source():
    """The `idx.Source` of the embedded sample (the .npz inside the package)."""
    ref = importlib.resources.files("tf_mtvib.data").joinpath(SAMPLE_FILE)
    with importlib.resources.as_file(ref) as path:
        return idx.Source(
            os.path.dirname(os.path.abspath(path)), "tf_mtvib package", {SAMPLE_FILE: idx.file_sha256(path)}
        )


def write_sample(path, data_dir=None, num_train=5000, num_test=1000, seed=2024):
    """Regenerates the embedded sample from real MNIST (kept compressed)."""
    source = idx.load_mnist_like("mnist", data_dir, allow_download=False)
    arrays = {}
    for offset, split in enumerate(("train", "test")):
        images, labels = source[split]
        x, y = overlay_pairs(images, labels, {"train": num_train, "test": num_test}[split], seed=seed + offset)
        arrays[f"x_{split}"], arrays[f"y_{split}"] = x, y.astype(np.uint8)
    with atomic.atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)


if __name__ == "__main__":  # python -m tf_mtvib.data.multimnist DATA_DIR
    import sys

    write_sample(os.path.join(os.path.dirname(__file__), SAMPLE_FILE), sys.argv[1] if len(sys.argv) > 1 else None)
