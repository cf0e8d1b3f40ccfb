"""TensorFlow Datasets builders of the package's data sets.

`import tf_mtvib.datasets` registers them with TFDS:

- `multi_mnist`, `multi_fashion_mnist`: the MultiMNIST / MultiFashion of
  `tf_mtvib.data.multimnist` (image uint8 `(36, 36, 1)`, labels `top_left`,
  `bottom_right`), made by the package's own generator; the seed and the
  split sizes are the builder config (`MultiConfig`). The manual folder holds
  the MNIST / Fashion-MNIST IDX files (directly or in `mnist/`,
  `fashion-mnist/`).
- `mtfl`: MTFL (image uint8 `(150, 150, 3)`, `gender`, `smiling`, `glasses`,
  `head_pose`, `landmarks` float32 `(10,)`); the manual folder is the MTFL
  folder; configs `official` (its listings) and `paper` (MTVIB's draw).
- `vmtl_domains`: the VMTL tasks of `tf_mtvib.data.domains` (image uint8
  `(28, 28, 1)`, `task`, `label`); domains, share for training, examples per
  task and seed are the builder config (`DomainsConfig`).

Offline, from local files:

    import tensorflow_datasets as tfds
    import tf_mtvib.datasets  # noqa: F401

    test = tfds.load("multi_mnist", split="test", data_dir=D, download_and_prepare_kwargs={
        "download_config": tfds.download.DownloadConfig(manual_dir=MNIST_DIR)})

The default config's splits are, in order and pixel for pixel, those of
`load_task_data("multimnist")` (examples are written unshuffled). Every
prepared data set records the folder and SHA-256 of its source files in its
`metadata.json` (`builder.info.metadata["data_sources"]`).
"""

import numpy as np
import tensorflow_datasets as tfds

from tf_mtvib.data import domains, idx, mtfl, multimnist

_VERSION = tfds.core.Version("1.0.0")


def _dataset_info(builder, description, features, supervised_keys):
    # Unshuffled, so that the splits keep the package's order; the source
    # digests go into the metadata during generation.
    return tfds.core.DatasetInfo(
        builder=builder, description=description, features=tfds.features.FeaturesDict(features),
        supervised_keys=supervised_keys, disable_shuffling=True, metadata=tfds.core.MetadataDict(),
    )


class MultiConfig(tfds.core.BuilderConfig):
    """Seed and sizes of a MultiMNIST / MultiFashion variant.

    Args:
        seed: generation seed (`multimnist.generate`). Default value: `0`.
        num_train, num_test: split sizes. Default value: 120,000 and 10,000.
    """

    def __init__(self, *, seed=0, num_train=multimnist.DEFAULT_SIZES["train"],
                 num_test=multimnist.DEFAULT_SIZES["test"], **kwargs):
        for arg, value in (("num_train", num_train), ("num_test", num_test)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{arg}` must be a positive int, received {arg}={value!r}.")
        kwargs.setdefault("name", f"seed{seed}-{num_train}-{num_test}")
        kwargs.setdefault("version", _VERSION)
        super().__init__(**kwargs)
        self.seed, self.num_train, self.num_test = seed, num_train, num_test


class _MultiBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = _VERSION
    NAME_IN_PACKAGE = None  # 'multimnist' / 'multifashion'
    BUILDER_CONFIGS = [
        MultiConfig(name="default", description="120,000 / 10,000 examples, seed 0: `load_task_data`'s default.")
    ]

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(multimnist.CANVAS, multimnist.CANVAS, 1)),
            **{task: tfds.features.ClassLabel(num_classes=10) for task in multimnist.TASK_NAMES},
        }
        return _dataset_info(self, multimnist.__doc__, features, ("image", {t: t for t in multimnist.TASK_NAMES}))

    def _split_generators(self, dl_manager):
        source_name = multimnist.SOURCES[self.NAME_IN_PACKAGE]
        source = idx.find_source(source_name, dl_manager.manual_dir, allow_download=False)
        self.info.metadata["data_sources"] = {source_name: source.record()}
        config = self.builder_config
        splits = multimnist.generate(
            idx.read_source(source_name, source), {"train": config.num_train, "test": config.num_test}, config.seed
        )
        return {split: self._generate_examples(*splits[split]) for split in ("train", "test")}

    def _generate_examples(self, images, labels):
        for i, (image, label) in enumerate(zip(images, labels)):
            yield i, {"image": image[..., None], **{t: int(label[k]) for k, t in enumerate(multimnist.TASK_NAMES)}}


def _idx_instructions(source):
    return (f"Pass `download_config=tfds.download.DownloadConfig(manual_dir=FOLDER)` with FOLDER holding the "
            f"{source} IDX files (train-images-idx3-ubyte.gz, ...), directly or in a subfolder named after it.")


class MultiMnist(_MultiBuilder):
    """MultiMNIST (MTVIB Sec. VI-A): two MNIST digits on a 36x36 canvas."""

    NAME_IN_PACKAGE = "multimnist"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _idx_instructions("MNIST")


class MultiFashionMnist(_MultiBuilder):
    """MultiFashion (MTVIB Sec. VI-A): two Fashion-MNIST items on a 36x36 canvas."""

    NAME_IN_PACKAGE = "multifashion"
    MANUAL_DOWNLOAD_INSTRUCTIONS = _idx_instructions("Fashion-MNIST")


class MtflConfig(tfds.core.BuilderConfig):
    """Which MTFL images form the splits (`tf_mtvib.data.mtfl.load_mtfl`'s
    `split`: 'official' listings or MTVIB's 'random' 9,000 / 1,000 draw)."""

    def __init__(self, *, split="official", seed=0, **kwargs):
        kwargs.setdefault("version", _VERSION)
        super().__init__(**kwargs)
        self.split, self.seed = split, seed


class Mtfl(tfds.core.GeneratorBasedBuilder):
    """MTFL (Zhang et al., ECCV 2014), the four attributes of MTVIB Table II."""

    VERSION = _VERSION
    BUILDER_CONFIGS = [
        MtflConfig(name="official", description="training.txt / testing.txt as listed."),
        MtflConfig(name="paper", split="random", description="MTVIB's 9,000 / 1,000 draw, seed 0 (load_task_data)."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Pass `download_config=tfds.download.DownloadConfig(manual_dir=MTFL_FOLDER)`, the folder holding "
        "training.txt, testing.txt and the images they name."
    )

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(mtfl.IMAGE_SIZE, mtfl.IMAGE_SIZE, 3)),
            "landmarks": tfds.features.Tensor(shape=(10,), dtype=np.float32),
            **{name: tfds.features.ClassLabel(num_classes=size) for name, size in mtfl.ATTRIBUTES},
        }
        return _dataset_info(self, mtfl.__doc__, features, ("image", {name: name for name, _ in mtfl.ATTRIBUTES}))

    def _split_generators(self, dl_manager):
        root = str(dl_manager.manual_dir)
        data = mtfl.load_mtfl(root, split=self.builder_config.split, seed=self.builder_config.seed)
        self.info.metadata["data_sources"] = {"mtfl": mtfl.listing_source(root).record()}
        return {split: self._generate_examples(*data[split]) for split in ("train", "test")}

    def _generate_examples(self, images, labels, landmarks):
        for i in range(len(images)):
            yield i, {"image": images[i], "landmarks": landmarks[i], **{k: int(v[i]) for k, v in labels.items()}}


class DomainsConfig(tfds.core.BuilderConfig):
    """A VMTL task set (arguments of `tf_mtvib.data.domains.load_domains`)."""

    def __init__(
        self, *, domains=domains.DEFAULT_DOMAINS, train_fraction=0.1, examples_per_task=1800, seed=0, **kwargs
    ):
        kwargs.setdefault("name", "-".join(domains) + f"-{train_fraction}-{examples_per_task}-seed{seed}")
        kwargs.setdefault("version", _VERSION)
        super().__init__(**kwargs)
        self.domains, self.train_fraction = tuple(domains), train_fraction
        self.examples_per_task, self.seed = examples_per_task, seed


class VmtlDomains(tfds.core.GeneratorBasedBuilder):
    """The VMTL tasks (one label space, each task its own examples): MNIST,
    rotated MNIST, inverted MNIST, scikit-learn's digits."""

    VERSION = _VERSION
    BUILDER_CONFIGS = [
        DomainsConfig(name="default", description="mnist, rotated, digits; 10 % for training (the CLI's default)."),
        DomainsConfig(name="all", domains=domains.DOMAINS, description="all four domains; 10 % for training."),
    ]
    MANUAL_DOWNLOAD_INSTRUCTIONS = _idx_instructions("MNIST") + " scikit-learn provides the 'digits' domain."

    def _info(self):
        features = {
            "image": tfds.features.Image(shape=(28, 28, 1)),
            "task": tfds.features.ClassLabel(names=list(self.builder_config.domains)),
            "label": tfds.features.ClassLabel(num_classes=domains.NUM_CLASSES),
        }
        return _dataset_info(self, domains.__doc__, features, ({"image": "image", "task": "task"}, "label"))

    def _split_generators(self, dl_manager):
        config = self.builder_config
        mnist_dir = str(dl_manager.manual_dir) if any(d != "digits" for d in config.domains) else None
        data = domains.load_domains(
            config.domains, config.train_fraction, config.examples_per_task, mnist_dir, config.seed
        )
        self.info.metadata["data_sources"] = data.sources
        return {
            "train": self._generate_examples(data.x_train, data.task_train, data.y_train),
            "test": self._generate_examples(data.x_test, data.task_test, data.y_test),
        }

    def _generate_examples(self, images, tasks, labels):
        # load_domains gives k / 255 in float32; rounding recovers the uint8 pixel exactly.
        pixels = np.round(images * 255.0).astype(np.uint8)
        for i in range(len(pixels)):
            yield i, {"image": pixels[i], "task": int(tasks[i]), "label": int(labels[i])}
