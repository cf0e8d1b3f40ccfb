"""Reading MNIST-format IDX files (gzip-compressed or raw) and finding them."""

import dataclasses
import gzip
import hashlib
import os

import numpy as np

# SHA-256 of the uncompressed IDX content of the known distributions
# (../shared/data/README.md), keyed by (data set, file name without .gz).
KNOWN_SHA256 = {
    ("fashion_mnist", "t10k-images-idx3-ubyte"): "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    ("fashion_mnist", "t10k-labels-idx1-ubyte"): "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
    ("fashion_mnist", "train-images-idx3-ubyte"): "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    ("fashion_mnist", "train-labels-idx1-ubyte"): "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    ("mnist", "t10k-images-idx3-ubyte"): "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
    ("mnist", "t10k-labels-idx1-ubyte"): "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
    ("mnist", "train-images-idx3-ubyte"): "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
    ("mnist", "train-labels-idx1-ubyte"): "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
}

DATASETS = ("mnist", "fashion_mnist")
_SUBFOLDERS = {"mnist": ("mnist", "MNIST"), "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST")}
DEBIAN_FOLDERS = {"fashion_mnist": "/usr/share/datasets/fashion-mnist"}
_SPLIT_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# IDX type codes (third magic byte) to numpy dtypes, big-endian as stored.
_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


class DataNotFoundError(FileNotFoundError):
    """No source of a data set was found; the message lists what was tried."""


def parse_idx(content, source="<bytes>"):
    """Parses the bytes of one IDX file into a numpy array.

    Checks the magic number, the type code and that the payload size equals
    the product of the header's dimensions.
    """
    if len(content) < 4 or content[0] != 0 or content[1] != 0:
        raise ValueError(f"{source} is not an IDX file: bad magic number {content[:4]!r}.")
    type_code, ndim = content[2], content[3]
    if type_code not in _IDX_DTYPES:
        raise ValueError(f"{source} has unknown IDX type code 0x{type_code:02x}.")
    header_size = 4 + 4 * ndim
    if ndim == 0 or len(content) < header_size:
        raise ValueError(f"{source} has a truncated IDX header ({ndim} dimensions).")
    dims = tuple(int.from_bytes(content[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[type_code])
    expected = int(np.prod(dims)) * dtype.itemsize
    payload = len(content) - header_size
    if payload != expected:
        raise ValueError(
            f"{source} is corrupt: header says shape {dims} ({expected} bytes) but "
            f"the file holds {payload} bytes of data."
        )
    array = np.frombuffer(content, dtype=dtype, offset=header_size).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def read_idx(path, dataset=None):
    """Reads an IDX file (gzip or raw) and, for a known file of `dataset`, checks
    its SHA-256 against the published one.

    Returns:
        numpy array, e.g. uint8 `(60000, 28, 28)` for MNIST training images.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        content = f.read()
    if content[:2] == b"\x1f\x8b":
        try:
            content = gzip.decompress(content)
        except (OSError, EOFError) as e:
            raise ValueError(f"{path} is a corrupt gzip file: {e}") from e
    base = os.path.basename(path)
    base = base[:-3] if base.endswith(".gz") else base
    expected = KNOWN_SHA256.get((dataset, base))
    if expected is not None:
        digest = hashlib.sha256(content).hexdigest()
        if digest != expected:
            raise ValueError(
                f"{path} is corrupt or not the {dataset} file: SHA-256 {digest} "
                f"differs from the published {expected}."
            )
    return parse_idx(content, source=path)


def _find_file(folder, stem):
    for name in (stem + ".gz", stem):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    return None


def file_sha256(path):
    """SHA-256 of a file's bytes as stored (compressed or not)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class Source:
    """Where a data set was read from.

    Attributes:
        folder: the folder holding the files (or the Keras download folder).
        origin: why that folder: 'data_dir', 'TF_MTVIB_DATA', a package, ...
        sha256: `{file name: SHA-256 of the file as stored}`.
        paths: `{file stem: full path}` of the files read.
    """

    folder: str
    origin: str
    sha256: dict
    paths: dict = dataclasses.field(default_factory=dict, compare=False)
    arrays: dict = dataclasses.field(default=None, compare=False, repr=False)

    def record(self):
        """The JSON-able summary written into a run's config.json / metrics.json."""
        return {"folder": self.folder, "origin": self.origin, "sha256": dict(sorted(self.sha256.items()))}

    def key(self):
        """A short digest of all the source files, for cache file names."""
        joined = "".join(f"{name}={digest};" for name, digest in sorted(self.sha256.items()))
        return hashlib.sha256(joined.encode()).hexdigest()[:16]


def _candidate_folders(dataset, root, origin):
    return [(os.path.join(root, sub), origin) for sub in _SUBFOLDERS[dataset]] + [(root, origin)]


def _folder_source(dataset, folder, origin):
    """`(Source, None)` when `folder` holds all four files, else `(None, missing stems)`."""
    stems = [s for pair in _SPLIT_FILES.values() for s in pair]
    paths = {s: _find_file(folder, s) for s in stems}
    missing = [s for s, p in paths.items() if p is None]
    if missing:
        return None, missing
    digests = {os.path.basename(p): file_sha256(p) for p in paths.values()}
    return Source(os.path.abspath(folder), origin, digests, paths), None


def _load_from_keras(dataset):
    import keras

    loader = {"mnist": keras.datasets.mnist, "fashion_mnist": keras.datasets.fashion_mnist}[dataset]
    (x_train, y_train), (x_test, y_test) = loader.load_data()
    arrays = {"train": (x_train, y_train), "test": (x_test, y_test)}
    # Keras keeps its downloads in its own layout; the digests are of the arrays' bytes.
    digests = {
        f"{split}-{part}": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()
        for split, pair in arrays.items() for part, a in zip(("images", "labels"), pair)
    }
    folder = os.path.join(os.environ.get("KERAS_HOME", os.path.join(os.path.expanduser("~"), ".keras")), "datasets")
    return Source(folder, f"keras.datasets.{dataset}", digests, arrays=arrays)


def find_source(dataset, data_dir=None, allow_download=True):
    """Finds the IDX files of MNIST or Fashion-MNIST and digests them.

    With `data_dir`, that folder (or its subfolder named after the data set:
    `mnist/`, `fashion-mnist/`) is the only place looked at. Without it, in
    order: the folder in `$TF_MTVIB_DATA`; (Fashion-MNIST) Debian's
    /usr/share/datasets/fashion-mnist; `keras.datasets` when online.

    Returns:
        A `Source`.

    Raises:
        DataNotFoundError naming the missing files and every place tried.
    """
    if dataset not in DATASETS:
        raise ValueError(f"`dataset` must be one of {DATASETS}, received dataset={dataset!r}.")
    if data_dir is not None:
        data_dir = os.fspath(data_dir)
        candidates = _candidate_folders(dataset, data_dir, "data_dir")
    else:
        candidates = []
        if os.environ.get("TF_MTVIB_DATA"):
            candidates += _candidate_folders(dataset, os.environ["TF_MTVIB_DATA"], "TF_MTVIB_DATA")
        if dataset in DEBIAN_FOLDERS:
            candidates.append((DEBIAN_FOLDERS[dataset], "Debian package dataset-fashion-mnist"))
    tried = []
    for folder, origin in candidates:
        source, missing = _folder_source(dataset, folder, origin)
        if source is not None:
            return source
        tried.append(f"{folder} ({origin}): missing {', '.join(missing)}")
    if data_dir is not None:
        raise DataNotFoundError(
            f"data_dir={data_dir!r} does not hold the {dataset} IDX files (plain or .gz). A given folder is the "
            "only source tried; TF_MTVIB_DATA and downloads apply only when none is given. Tried:\n  "
            + "\n  ".join(tried)
        )
    if allow_download:
        try:
            return _load_from_keras(dataset)
        except Exception as e:  # offline machines raise a variety of errors
            tried.append(f"keras.datasets.{dataset}.load_data(): {type(e).__name__}: {e}")
    raise DataNotFoundError(
        f"Could not find the {dataset} IDX files. Pass --data-dir / data_dir= or set "
        "TF_MTVIB_DATA to a folder holding them. Tried:\n  " + "\n  ".join(tried)
    )


def read_source(dataset, source):
    """Reads a `Source` found by `find_source`: `{"train": (images, labels), "test": (...)}`.

    Raises:
        ValueError naming the file when one is corrupt.
    """
    if source.arrays is not None:
        return source.arrays
    result = {}
    for split, (images_stem, labels_stem) in _SPLIT_FILES.items():
        images = read_idx(source.paths[images_stem], dataset)
        labels = read_idx(source.paths[labels_stem], dataset)
        if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
            raise ValueError(
                f"{source.paths[images_stem]} {images.shape} and {source.paths[labels_stem]} "
                f"{labels.shape} do not match."
            )
        result[split] = (images, labels)
    return result


def load_mnist_like(dataset, data_dir=None, allow_download=True):
    """Loads MNIST or Fashion-MNIST as uint8 images `(n, 28, 28)` and labels `(n,)`
    from the place `find_source` picks (only `data_dir` when it is given).

    Returns:
        `{"train": (images, labels), "test": (images, labels)}`.

    Raises:
        DataNotFoundError listing every place tried; ValueError naming a
        corrupt file.
    """
    return read_source(dataset, find_source(dataset, data_dir, allow_download))
