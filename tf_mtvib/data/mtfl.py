"""Reader for the MTFL data set (Zhang et al., ECCV 2014) in its own folder format.

The folder holds `training.txt` and `testing.txt`; each line is

    <relative image path> x1 .. x5 y1 .. y5 gender smile glasses pose

with Windows separators in the path, five landmark coordinates in pixels of
the original image, and 1-based attributes: gender (1 male, 2 female),
smiling (1 yes, 2 no), glasses (1 yes, 2 no), head pose (1..5, left profile
to right profile). MTVIB Table II uses the four attributes as classification
tasks on 150x150 images.

Task order: the file's, `gender, smiling, glasses, head_pose` (2/2/2/5
classes). The MTVIB paper names no MTFL task: its Table II lists the output
heads as "FC 192 x 5/2/2/2" (the 5-class head pose first) and its Table V
numbers tasks 1-4, so our task i is not known to be the paper's task i;
compare per-task numbers with Table V by name only where the order is known.

Split: MTVIB samples 9,000 training and 1,000 test images at random
(Sec. VI-A); `load_mtfl(split="random")`, the default, does that with a seed
over all the images the two listings name. `split="official"` keeps the
published training.txt / testing.txt split.
"""

import os

import numpy as np

from tf_mtvib.tasks import Task

IMAGE_SIZE = 150
ATTRIBUTES = (("gender", 2), ("smiling", 2), ("glasses", 2), ("head_pose", 5))
_SPLIT_FILES = {"train": "training.txt", "test": "testing.txt"}
SPLITS = ("random", "official")
PAPER_SIZES = {"train": 9000, "test": 1000}


def mtfl_tasks():
    """The four classification tasks of MTVIB Table II."""
    return [Task(name, "classification", size) for name, size in ATTRIBUTES]


def parse_annotation_line(line, source="<line>"):
    """Returns `(relative path, landmarks float32 (10,), attributes int64 (4,) zero-based)`."""
    fields = line.split()
    if len(fields) != 15:
        raise ValueError(f"{source}: expected 15 fields (path, 10 coordinates, 4 attributes), found {len(fields)}.")
    path = fields[0].replace("\\", "/")
    try:
        landmarks = np.asarray(fields[1:11], np.float32)
        attributes = np.asarray(fields[11:], np.int64) - 1
    except ValueError as e:
        raise ValueError(f"{source}: {e}") from e
    for (name, size), value in zip(ATTRIBUTES, attributes):
        if not 0 <= value < size:
            raise ValueError(f"{source}: attribute {name}={value + 1} outside 1..{size}.")
    return path, landmarks, attributes


def listing_source(root):
    """The `idx.Source` of an MTFL folder: the SHA-256 of its two listing files
    (the ~13,000 images are not hashed; the listings name them)."""
    from tf_mtvib.data.idx import Source, file_sha256

    digests = {name: file_sha256(os.path.join(root, name)) for name in _SPLIT_FILES.values()}
    return Source(os.path.abspath(root), "data_dir", digests)


def _read_listing(root, filename):
    listing = os.path.join(root, filename)
    if not os.path.isfile(listing):
        raise FileNotFoundError(f"MTFL folder {root!r} has no {filename}.")
    with open(listing) as f:
        return [(f"{listing}:{number}", line) for number, line in enumerate(f, start=1) if line.strip()]


def _split_lines(root, split, num_train, num_test, seed):
    """`{split: [(source, line), ...]}` of the chosen images."""
    listings = {name: _read_listing(root, filename) for name, filename in _SPLIT_FILES.items()}
    if split == "official":
        sizes = {"train": num_train, "test": num_test}
        return {name: lines[: sizes[name]] if sizes[name] else lines for name, lines in listings.items()}
    pool = listings["train"] + listings["test"]
    num_test = num_test or PAPER_SIZES["test"]
    num_train = num_train or min(PAPER_SIZES["train"], len(pool) - num_test)
    if num_train < 1 or num_train + num_test > len(pool):
        raise ValueError(
            f"MTFL folder {root!r} lists {len(pool)} images, too few for num_train={num_train} "
            f"and num_test={num_test} (the paper's split needs 10,000)."
        )
    order = np.random.default_rng(seed).permutation(len(pool))
    return {
        "test": [pool[i] for i in order[:num_test]],
        "train": [pool[i] for i in order[num_test: num_test + num_train]],
    }


def load_mtfl(root, image_size=IMAGE_SIZE, split="random", num_train=None, num_test=None, seed=0):
    """Loads MTFL images resized to `image_size` (RGB) and their labels.

    Args:
        root: the MTFL folder (with training.txt, testing.txt and the images).
        image_size: side of the square output images. Default value: `150`.
        split: 'random' (MTVIB's protocol: `num_test` test and `num_train`
            training images drawn without overlap, with `seed`, from all the
            images of both listings) or 'official' (training.txt / testing.txt,
            the first `num_train` / `num_test` lines of each). Default value:
            `'random'`.
        num_train, num_test: sizes. Default value: for 'random', 9,000
            (or what the folder has beyond the test set) and 1,000; for
            'official', every listed image.
        seed: seed of the random split. Default value: `0`.

    Returns:
        `{split: (images uint8 (n, S, S, 3), {task: labels (n,)}, landmarks (n, 10))}`
        with landmarks rescaled to the output image size.
    """
    from PIL import Image

    if split not in SPLITS:
        raise ValueError(f"`split` must be one of {SPLITS}, received split={split!r}.")
    for name, value in (("num_train", num_train), ("num_test", num_test)):
        if value is not None and (not isinstance(value, (int, np.integer)) or value < 1):
            raise ValueError(f"`{name}` must be a positive int, received {name}={value!r}.")
    if not os.path.isdir(root):
        raise FileNotFoundError(f"MTFL folder {root!r} does not exist.")
    result = {}
    for name, lines in _split_lines(root, split, num_train, num_test, seed).items():
        if not lines:
            raise ValueError(f"MTFL folder {root!r}: the {name} split lists no images.")
        images, landmarks, attributes = [], [], []
        for source, line in lines:
            path, points, attrs = parse_annotation_line(line, source)
            full = os.path.join(root, path)
            if not os.path.isfile(full):
                raise FileNotFoundError(f"{source}: image {full!r} does not exist.")
            with Image.open(full) as image:
                width, height = image.size
                image = image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                images.append(np.asarray(image, np.uint8))
            scale = np.repeat([image_size / width, image_size / height], 5).astype(np.float32)
            landmarks.append(points * scale)
            attributes.append(attrs)
        attributes = np.stack(attributes)
        labels = {task: attributes[:, i] for i, (task, _) in enumerate(ATTRIBUTES)}
        result[name] = (np.stack(images), labels, np.stack(landmarks))
    return result
