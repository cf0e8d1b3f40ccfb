"""Named data sets as arrays, and tf.data pipelines yielding (x, {task: y})."""

import dataclasses
import numbers

import keras
import numpy as np
import tensorflow as tf

from tf_mtvib.data import multimnist, validation
from tf_mtvib.tasks import multi_digit_tasks

DATASET_NAMES = ("sample", "multimnist", "multifashion", "mtfl")


@dataclasses.dataclass
class TaskData:
    """A data set ready for a model: float images in [0, 1] and labels per task."""

    name: str
    tasks: list
    x_train: np.ndarray
    y_train: dict
    x_test: np.ndarray
    y_test: dict
    # {source data set: idx.Source.record()}: folder, origin and SHA-256 of the files read.
    sources: dict = None

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])


def to_float_images(images):
    """uint8 `(n, H, W)` or `(n, H, W, C)` -> float32 `(n, H, W, C)` in [0, 1]."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.dtype == np.uint8:
        return images.astype(np.float32) / 255.0
    return images.astype(np.float32)


def load_task_data(name, data_dir=None, cache_dir=None, num_train=None, num_test=None, seed=0, allow_download=True):
    """Loads a named data set: 'sample' (embedded MultiMNIST sample),
    'multimnist', 'multifashion', or 'mtfl' (data_dir = the MTFL folder;
    MTVIB's seeded random 9,000 / 1,000 split, see `mtfl.load_mtfl`).

    Every split is validated (shapes, finite values, label ranges) before
    it is returned.
    """
    if name not in DATASET_NAMES:
        raise ValueError(f"`dataset` must be one of {DATASET_NAMES}, received {name!r}.")
    if name == "mtfl":
        from tf_mtvib.data import mtfl

        if data_dir is None:
            raise ValueError("The MTFL data set needs `data_dir`, the folder holding training.txt.")
        raw = mtfl.load_mtfl(data_dir, num_train=num_train, num_test=num_test, seed=seed)
        sources = {"mtfl": mtfl.listing_source(data_dir)}
        tasks = mtfl.mtfl_tasks()
        splits = {s: (to_float_images(raw[s][0]), raw[s][1]) for s in raw}
    else:
        if name == "sample":
            raw = multimnist.load_sample()
            sources = {"sample": multimnist.sample_source()}
            if num_train or num_test:
                raw = {
                    "train": tuple(a[:num_train] for a in raw["train"]),
                    "test": tuple(a[:num_test] for a in raw["test"]),
                }
        else:
            raw, found = multimnist.load_multi(name, data_dir, cache_dir, num_train, num_test, seed, allow_download)
            sources = {multimnist.SOURCES[name]: found}
        tasks = multi_digit_tasks(multimnist.TASK_NAMES)
        splits = {
            s: (to_float_images(x), {t.name: y[:, i].astype(np.int64) for i, t in enumerate(tasks)})
            for s, (x, y) in raw.items()
        }
    for split, (x, y) in splits.items():
        validation.check_images(x, x.shape[1:], name=f"{name} {split} images")
        validation.check_labels(y, tasks, x.shape[0])
    return TaskData(name, tasks, splits["train"][0], splits["train"][1], splits["test"][0], splits["test"][1],
                    {k: v.record() for k, v in sources.items()})


def without_autotune(dataset):
    """`dataset` with tf.data's autotuning off and Keras' sharding of in-memory data.

    Why: with autotuning on (TF 2.21), deleting an iterator on a busy CPU
    sometimes waits, apparently for the autotuner's next round (rounds start
    10 ms apart and grow to 60 s apart). Keras deletes one at every epoch of a
    finite data set and after every `predict` / `evaluate` call; on this
    package's models the wait measured 0.2-3.3 s (benchmarks/RESULTS.md,
    "Deleting tf.data iterators"). Pipelines over in-memory arrays have
    nothing to tune.
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    return dataset.with_options(options)


def is_in_memory(data):
    """True for a NumPy array or tensor, or a non-empty dict of them (lists,
    which Keras and tf.data read differently, are not)."""
    if isinstance(data, dict):
        return bool(data) and all(is_in_memory(v) for v in data.values())
    return isinstance(data, np.ndarray) or tf.is_tensor(data)


def batches_of(arrays, batch_size):
    """In-memory `arrays` (one, or a tuple such as `(x, y, sample_weight)`) as
    an unshuffled, batched dataset without autotuning (see `without_autotune`):
    what Keras' `predict` / `evaluate` build from arrays, minus the stalls.
    Raises ValueError when the parts hold different numbers of examples."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, received batch_size={batch_size!r}.")
    if isinstance(arrays, tuple):
        counts = [[int(leaf.shape[0]) for leaf in tf.nest.flatten(part)] for part in arrays]
        if len({count for part in counts for count in part}) > 1:
            names = ("x", "y", "sample_weight")[: len(arrays)]
            found = ", ".join(f"{name} {sorted(set(part))}" for name, part in zip(names, counts))
            raise ValueError(f"x, labels and sample weights must hold as many examples each, received {found}.")
    floatx = keras.config.floatx()

    def as_floatx(array):
        # Floats in Keras' floatx, as Keras' own array pipeline hands them over.
        if isinstance(array, np.ndarray) and array.dtype.kind == "f":
            return array.astype(floatx, copy=False)
        if tf.is_tensor(array) and array.dtype.is_floating:
            return tf.cast(array, floatx)
        return array

    arrays = tf.nest.map_structure(as_floatx, arrays)
    return without_autotune(tf.data.Dataset.from_tensor_slices(arrays).batch(int(batch_size)).prefetch(1))


def make_dataset(x, y, batch_size, shuffle=False, seed=None, drop_remainder=False):
    """A `tf.data.Dataset` of `(x batch, {task: labels batch})`.

    Shuffles with `seed` each epoch when `shuffle`, batches, and prefetches;
    tf.data's autotuning is off (see `without_autotune`).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"`batch_size` must be a positive int, received batch_size={batch_size!r}.")
    dataset = tf.data.Dataset.from_tensor_slices((x, dict(y)))
    if shuffle:
        dataset = dataset.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    return without_autotune(dataset.batch(batch_size, drop_remainder=drop_remainder).prefetch(2))
