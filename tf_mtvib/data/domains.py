"""Multi-domain tasks with one shared label space (the VMTL setting), from
data available offline.

Domains (each a task of its own with its own examples; classes 0-9):
- 'mnist': MNIST digits;
- 'rotated': other MNIST digits, rotated by 90 degrees;
- 'inverted': other MNIST digits with inverted intensities;
- 'digits': scikit-learn's bundled 8x8 handwritten digits (1,797 images,
  another source and writers), upsampled to 28x28 with bilinear resizing.
The MNIST-derived domains draw disjoint examples from the MNIST training set.

The limited-data protocol of VMTL Sec. 4: `train_fraction` (5 %, 10 %, 20 %)
of each task's examples for training, stratified by class, the rest for test.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from tf_mtvib.data import idx
from tf_mtvib.data.pipeline import without_autotune

DOMAINS = ("mnist", "rotated", "inverted", "digits")
DEFAULT_DOMAINS = ("mnist", "rotated", "digits")
NUM_CLASSES = 10


@dataclasses.dataclass
class DomainData:
    """Images `(n, 28, 28, 1)` float32 in [0, 1], task index and label per example."""

    task_names: list
    x_train: np.ndarray
    task_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    task_test: np.ndarray
    y_test: np.ndarray
    num_classes: int = NUM_CLASSES
    # {source data set: idx.Source.record()}: folder, origin and SHA-256 of the files read.
    sources: dict = None

    @property
    def input_shape(self):
        return tuple(self.x_train.shape[1:])

    @property
    def train_sizes(self):
        return [int(np.sum(self.task_train == t)) for t in range(len(self.task_names))]

    def inputs(self, split):
        """`{"images", "task"}` of a split, the model's input format."""
        if split == "train":
            return {"images": self.x_train, "task": self.task_train}
        return {"images": self.x_test, "task": self.task_test}


def _sklearn_digits_source():
    import importlib.resources

    ref = importlib.resources.files("sklearn.datasets.data").joinpath("digits.csv.gz")
    with importlib.resources.as_file(ref) as path:
        return idx.Source(os.path.dirname(os.path.abspath(path)), "scikit-learn package",
                          {"digits.csv.gz": idx.file_sha256(path)})


def _sklearn_digits():
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    # Values 0..16; resize each to 28x28 as MNIST's frame.
    images = np.stack(
        [
            np.asarray(Image.fromarray((im * (255.0 / 16.0)).astype(np.uint8)).resize((28, 28), Image.BILINEAR))
            for im in digits.images
        ]
    )
    return images, digits.target.astype(np.int64)


def _stratified_split(labels, fraction, rng):
    train = []
    for c in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == c))
        train.extend(members[: max(1, int(round(fraction * len(members))))])
    train = np.sort(np.asarray(train))
    test = np.setdiff1d(np.arange(len(labels)), train)
    return train, test


def load_domains(domains=DEFAULT_DOMAINS, train_fraction=0.1, examples_per_task=1800, data_dir=None, seed=0):
    """Builds the multi-domain tasks.

    Args:
        domains: names from `DOMAINS`, one task each, at least two.
        train_fraction: share of each task's examples used for training.
        examples_per_task: examples drawn for each MNIST-derived task (the
            'digits' task has its 1,797). Default value: `1800`.
        data_dir: where the MNIST IDX files are, the only place looked at
            when given (see `idx.find_source`).
        seed: fixes the draws and the splits.

    Returns:
        A `DomainData`.
    """
    domains = list(domains)
    unknown = [d for d in domains if d not in DOMAINS]
    if len(domains) < 2 or unknown or len(set(domains)) != len(domains):
        raise ValueError(f"`domains` must be two or more distinct names from {DOMAINS}, received {domains!r}.")
    if not 0 < train_fraction < 1:
        raise ValueError(f"`train_fraction` must be in (0, 1), received train_fraction={train_fraction!r}.")
    rng = np.random.default_rng(seed)
    mnist_domains = [d for d in domains if d != "digits"]
    sources = {}
    if "digits" in domains:
        sources["sklearn_digits"] = _sklearn_digits_source().record()
    if mnist_domains:
        source = idx.find_source("mnist", data_dir)
        sources["mnist"] = source.record()
        images, labels = idx.read_source("mnist", source)["train"]
        if examples_per_task * len(mnist_domains) > len(images):
            raise ValueError(
                f"`examples_per_task`={examples_per_task} is too large for {len(mnist_domains)} MNIST domains."
            )
        order = rng.permutation(len(images))
    parts = {"train": [], "test": []}
    next_mnist = 0
    for t, domain in enumerate(domains):
        if domain == "digits":
            x, y = _sklearn_digits()
        else:
            chosen = order[next_mnist * examples_per_task: (next_mnist + 1) * examples_per_task]
            next_mnist += 1
            x, y = images[chosen], labels[chosen].astype(np.int64)
            if domain == "rotated":
                x = np.rot90(x, k=1, axes=(1, 2))
            elif domain == "inverted":
                x = 255 - x
        x = (x.astype(np.float32) / 255.0)[..., None]
        train, test = _stratified_split(y, train_fraction, rng)
        for split, rows in (("train", train), ("test", test)):
            parts[split].append((x[rows], np.full(len(rows), t, np.int32), y[rows]))
    joined = {s: [np.concatenate([p[i] for p in parts[s]]) for i in range(3)] for s in parts}
    return DomainData(domains, *joined["train"], *joined["test"], sources=sources)


def make_domain_dataset(data, split="train", batch_size_per_task=32, seed=0):
    """A `tf.data.Dataset` of `({"images", "task"}, labels)`.

    For 'train', every batch holds `batch_size_per_task` examples of each
    task (each task's examples shuffled and repeated; an epoch is as many
    batches as the largest task needs once). For 'test', plain batches of
    `T * batch_size_per_task` in order.
    """
    if not isinstance(batch_size_per_task, int) or batch_size_per_task < 1:
        raise ValueError(f"`batch_size_per_task` must be a positive int, received {batch_size_per_task!r}.")
    num_tasks = len(data.task_names)
    if split != "train":
        inputs = data.inputs("test")
        return without_autotune(
            tf.data.Dataset.from_tensor_slices((inputs, data.y_test)).batch(num_tasks * batch_size_per_task)
        )
    per_task = []
    for t in range(num_tasks):
        mask = data.task_train == t
        ds = tf.data.Dataset.from_tensor_slices(
            ({"images": data.x_train[mask], "task": data.task_train[mask]}, data.y_train[mask])
        )
        per_task.append(ds.shuffle(int(mask.sum()), seed=seed + t).repeat().batch(batch_size_per_task))
    steps = int(np.ceil(max(data.train_sizes) / batch_size_per_task))

    def concat(*batches):
        inputs = {k: tf.concat([b[0][k] for b in batches], 0) for k in ("images", "task")}
        return inputs, tf.concat([b[1] for b in batches], 0)

    return without_autotune(tf.data.Dataset.zip(tuple(per_task)).map(concat).take(steps).prefetch(2))


_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def load_image_folder_domains(root, domains=None, extractor="ResNet50", weights="imagenet", image_size=224,
                              train_fraction=0.1, batch_size=64, seed=0):
    """Office-Home / Office-Caltech style data (`root/<domain>/<class>/<image>`)
    as VMTL tasks on features of a frozen Keras Applications network (the
    paper's setting: features from a pretrained backbone, then the VMTL
    inference networks).

    Args:
        root: the folder holding one folder per domain.
        domains: domain folder names (default: all, sorted); classes are the
            union of class folder names, sorted, shared by all domains.
        extractor: a `keras.applications` model name, used with
            `include_top=False, pooling="avg"`.
        weights: 'imagenet' (downloaded by Keras, so online only), the path of
            a local weights file (offline), or `None` (random weights).
        image_size: side the images are resized to.

    Returns:
        A `DomainData` whose "images" are feature vectors `(n, features)`.
    """
    import keras
    from PIL import Image

    if not os.path.isdir(root):
        raise FileNotFoundError(f"`root` must be a folder of domain folders, received root={root!r}.")
    domains = list(domains or sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))))
    if len(domains) < 2:
        raise ValueError(f"{root} must hold at least two domain folders, found {domains}.")
    classes = sorted({c for d in domains for c in os.listdir(os.path.join(root, d))
                      if os.path.isdir(os.path.join(root, d, c))})
    if weights not in (None, "imagenet") and not os.path.isfile(weights):
        raise FileNotFoundError(f"`weights` must be None, 'imagenet' or a weights file, received weights={weights!r}.")
    if not hasattr(keras.applications, extractor):
        raise ValueError(f"`extractor` must name a keras.applications model, received extractor={extractor!r}.")
    network = getattr(keras.applications, extractor)(
        include_top=False, pooling="avg", weights=weights, input_shape=(image_size, image_size, 3)
    )
    module = getattr(keras.applications, _APPLICATION_MODULES.get(extractor, extractor.lower()), None)
    preprocess = getattr(module, "preprocess_input", lambda x: x)
    rng = np.random.default_rng(seed)
    parts = {"train": [], "test": []}
    for t, domain in enumerate(domains):
        paths, labels = [], []
        for c, name in enumerate(classes):
            folder = os.path.join(root, domain, name)
            if os.path.isdir(folder):
                files = sorted(f for f in os.listdir(folder) if f.lower().endswith(_IMAGE_SUFFIXES))
                paths += [os.path.join(folder, f) for f in files]
                labels += [c] * len(files)
        if not paths:
            raise ValueError(f"Domain {domain!r} under {root} holds no images ({', '.join(_IMAGE_SUFFIXES)}).")
        features = []
        for start in range(0, len(paths), batch_size):
            batch = np.stack([
                np.asarray(Image.open(p).convert("RGB").resize((image_size, image_size)), np.float32)
                for p in paths[start: start + batch_size]
            ])
            features.append(network.predict(preprocess(batch), verbose=0))
        x, y = np.concatenate(features).astype(np.float32), np.asarray(labels, np.int64)
        train, test = _stratified_split(y, train_fraction, rng)
        for split, rows in (("train", train), ("test", test)):
            parts[split].append((x[rows], np.full(len(rows), t, np.int32), y[rows]))
    joined = {s: [np.concatenate([p[i] for p in parts[s]]) for i in range(3)] for s in parts}
    return DomainData(domains, *joined["train"], *joined["test"], num_classes=len(classes))


# keras.applications model name -> its module (for preprocess_input).
_APPLICATION_MODULES = {
    "ResNet50": "resnet50", "ResNet101": "resnet", "ResNet152": "resnet", "ResNet50V2": "resnet_v2",
    "VGG16": "vgg16", "VGG19": "vgg19", "MobileNetV2": "mobilenet_v2", "MobileNetV3Small": "mobilenet_v3",
    "MobileNetV3Large": "mobilenet_v3", "EfficientNetB0": "efficientnet", "DenseNet121": "densenet",
}
