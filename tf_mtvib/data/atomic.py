"""Atomic writes: write beside the target, then rename over it."""

import contextlib
import json
import math
import os
import shutil
import tempfile


@contextlib.contextmanager
def atomic_path(path, suffix=""):
    """Yields a temporary path in the target's folder; on success it is renamed
    to `path`, on any error it is removed and `path` is left as it was."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + os.path.basename(path) + "-", suffix=suffix, dir=folder)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    try:
        yield tmp
        if os.path.isfile(tmp):
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates files readable by the owner only
        os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
        elif os.path.exists(tmp):
            os.remove(tmp)
        raise


def finite_or_none(value):
    """A copy of nested dicts / lists with NaN and Inf floats replaced by None,
    which JSON writes as null (Python would write bare NaN, invalid JSON)."""
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def write_json(path, obj):
    """Writes `obj` as indented, valid JSON atomically (NaN / Inf as null)."""
    with atomic_path(path, suffix=".json") as tmp:
        with open(tmp, "w") as f:
            json.dump(finite_or_none(obj), f, indent=2, sort_keys=True, allow_nan=False)
            f.write("\n")


def read_json(path, remedy):
    """Reads a JSON file; a damaged one raises ValueError naming the file and
    `remedy`, what the user can do about it."""
    try:
        with open(path) as f:
            return json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged (not valid JSON: {error}); {remedy}.") from None
