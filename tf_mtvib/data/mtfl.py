"""Reader for the MTFL data set (Zhang et al., ECCV 2014) in its own folder format.

The folder holds `training.txt` and `testing.txt`; each line is

    <relative image path> x1 .. x5 y1 .. y5 gender smile glasses pose

with Windows separators in the path, five landmark coordinates in pixels of
the original image, and 1-based attributes: gender (1 male, 2 female),
smiling (1 yes, 2 no), glasses (1 yes, 2 no), head pose (1..5, left profile
to right profile). MTVIB Table II uses the four attributes as classification
tasks on 150x150 images.
"""

import os

import numpy as np

from tf_mtvib.tasks import Task

IMAGE_SIZE = 150
ATTRIBUTES = (("gender", 2), ("smiling", 2), ("glasses", 2), ("head_pose", 5))
_SPLIT_FILES = {"train": "training.txt", "test": "testing.txt"}


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


def load_mtfl(root, image_size=IMAGE_SIZE, max_examples=None):
    """Loads MTFL images resized to `image_size` (RGB) and its labels.

    Args:
        root: the MTFL folder (with training.txt, testing.txt and the images).
        image_size: side of the square output images. Default value: `150`.
        max_examples: optional cap per split (the paper uses 9,000 / 1,000).

    Returns:
        `{split: (images uint8 (n, S, S, 3), {task: labels (n,)}, landmarks (n, 10))}`
        with landmarks rescaled to the output image size.
    """
    from PIL import Image

    if not os.path.isdir(root):
        raise FileNotFoundError(f"MTFL folder {root!r} does not exist.")
    result = {}
    for split, filename in _SPLIT_FILES.items():
        listing = os.path.join(root, filename)
        if not os.path.isfile(listing):
            raise FileNotFoundError(f"MTFL folder {root!r} has no {filename}.")
        with open(listing) as f:
            lines = [(i, l) for i, l in enumerate(f, start=1) if l.strip()]
        if max_examples:
            lines = lines[:max_examples]
        if not lines:
            raise ValueError(f"{listing} lists no images.")
        images, landmarks, attributes = [], [], []
        for number, line in lines:
            path, points, attrs = parse_annotation_line(line, f"{listing}:{number}")
            full = os.path.join(root, path)
            if not os.path.isfile(full):
                raise FileNotFoundError(f"{listing}:{number}: image {full!r} does not exist.")
            with Image.open(full) as image:
                width, height = image.size
                image = image.convert("RGB").resize((image_size, image_size), Image.BILINEAR)
                images.append(np.asarray(image, np.uint8))
            scale = np.repeat([image_size / width, image_size / height], 5).astype(np.float32)
            landmarks.append(points * scale)
            attributes.append(attrs)
        attributes = np.stack(attributes)
        labels = {name: attributes[:, i] for i, (name, _) in enumerate(ATTRIBUTES)}
        result[split] = (np.stack(images), labels, np.stack(landmarks))
    return result
