"""SavedModel export in TF Serving's layout (`<base>/<version>/`), loadable
with TensorFlow alone.

Signatures (inputs: `images`, float32 `(batch, H, W, C)` in the model's value
range):

- `serving_default`: the deterministic prediction (mean latent code); for each
  classification task `<task>_probabilities (batch, classes)`,
  `<task>_class (batch,)` int64 and `<task>_logits`; for a regression task
  `<task>_value`.
- `predict_mc` (models with a Gaussian bottleneck): the class probabilities
  averaged over `mc_samples` latent samples (fixed at export),
  `<task>_probabilities`, `<task>_class` and `<task>_entropy`, the predictive
  entropy `-sum_c p_c log p_c` in nats of the averaged probabilities.
- `encode` (models with a Gaussian bottleneck): `latent_mean` and
  `latent_scale` `(batch, latent_dim)` of q(z|x) (prefixed `<task>_` when each
  task has its own bottleneck).
- VMTL-family models instead have one task-indexed `serving_default`:
  inputs `images` and `task` (int32 `(batch,)`, the task of each example),
  outputs `logits`, `probabilities` `(batch, classes)` and `class`.
- `metadata` (no inputs): `json`, a scalar string with the task names, kinds,
  class counts, input shape, value range and the export settings; the same
  JSON is the asset `assets/tf_mtvib.json`.
"""

import json
import os
import re
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tf_mtvib.data import validation

METADATA_ASSET = "tf_mtvib.json"
_VERSION = re.compile(r"^\d+$")


def existing_versions(base_dir):
    """Sorted integer versions already exported under `base_dir`."""
    if not os.path.isdir(base_dir):
        return []
    return sorted(int(n) for n in os.listdir(base_dir) if _VERSION.match(n))


def export_metadata(model, mc_samples, value_range):
    if model.task_indexed:
        return {
            "format": "tf_mtvib.savedmodel/1",
            "model": model.name,
            "tasks": [{"name": n, "index": i, "kind": "classification", "num_classes": model.num_classes}
                      for i, n in enumerate(model.task_names)],
            "input_shape": list(model.example_shape),
            "input_dtype": "float32",
            "value_range": [float(value_range[0]), float(value_range[1])],
            "mc_samples": None,
            "signatures": ["serving_default", "metadata"],
        }
    tasks = [
        {
            "name": t.name,
            "kind": t.kind,
            "num_classes": int(t.size) if t.is_classification else None,
            "output_shape": list(t.output_shape),
        }
        for t in model.tasks
    ]
    return {
        "format": "tf_mtvib.savedmodel/1",
        "model": model.name,
        "tasks": tasks,
        "input_shape": list(model.example_shape),
        "input_dtype": "float32",
        "value_range": [float(value_range[0]), float(value_range[1])],
        "mc_samples": int(mc_samples) if model.bottlenecks else None,
        "signatures": ["serving_default", "metadata"]
        + (["predict_mc", "encode"] if model.bottlenecks else []),
    }


class _Serving(tf.Module):
    """The exported functions and the variables they use.

    The Keras model itself is kept out of the saved object graph, as Keras'
    own `ExportArchive` does: TF Serving's (TF1-style) loader could not find
    variables restored through the Keras layer objects, and a flat list of
    the variables the functions read is all a server needs.
    """

    def __init__(self, model, mc_samples, metadata_json, asset_path):
        super().__init__(name="tf_mtvib_serving")
        self.metadata_file = tf.saved_model.Asset(asset_path)
        spec = tf.TensorSpec((None,) + tuple(model.example_shape), tf.float32, name="images")
        if model.task_indexed:
            task_spec = tf.TensorSpec((None,), tf.int32, name="task")
            functions = {
                "serve": tf.function(lambda images, task: _serve_task_indexed(model, images, task),
                                     input_signature=[spec, task_spec])
            }
        else:
            functions = {"serve": tf.function(lambda images: _serve(model, images), input_signature=[spec])}
        functions["metadata"] = tf.function(lambda: {"json": tf.constant(metadata_json)}, input_signature=[])
        if getattr(model, "bottlenecks", None):
            functions["predict_mc"] = tf.function(
                lambda images: _predict_mc(model, images, mc_samples), input_signature=[spec]
            )
            functions["encode"] = tf.function(lambda images: _encode(model, images), input_signature=[spec])
        self.serving_signatures = {}
        variables = {}
        for name, function in functions.items():
            concrete = function.get_concrete_function()
            self.serving_signatures["serving_default" if name == "serve" else name] = concrete
            # The sampling functions also update the seed-generator states,
            # which Keras does not list among the model's variables.
            variables.update((id(v), v) for v in concrete.variables)
        self.variables_used = list(variables.values())
        self.functions = functions


def _serve(model, images):
    outputs = model(images, training=False)
    result = {}
    for task in model.tasks:
        out = tf.cast(outputs[task.name], tf.float32)
        if task.is_classification:
            result[f"{task.name}_logits"] = out
            result[f"{task.name}_probabilities"] = tf.nn.softmax(out, axis=-1)
            result[f"{task.name}_class"] = tf.argmax(out, axis=-1)
        else:
            result[f"{task.name}_value"] = out
    return result


def _serve_task_indexed(model, images, task):
    # VMTL-family models: each example is scored by the classifier of its task.
    logits = tf.cast(model({"images": images, "task": task}, training=False), tf.float32)
    return {"logits": logits, "probabilities": tf.nn.softmax(logits, axis=-1), "class": tf.argmax(logits, axis=-1)}


def _predict_mc(model, images, mc_samples):
    # The model's MC output is log of the sample-averaged softmax.
    outputs = model(images, training=False, latent_samples=mc_samples)
    result = {}
    for task in model.tasks:
        out = tf.cast(outputs[task.name], tf.float32)
        if task.is_classification:
            probabilities = tf.exp(out)
            result[f"{task.name}_probabilities"] = probabilities
            result[f"{task.name}_class"] = tf.argmax(out, axis=-1)
            result[f"{task.name}_entropy"] = -tf.reduce_sum(tf.math.multiply_no_nan(out, probabilities), axis=-1)
        else:
            result[f"{task.name}_value"] = out
    return result


def _encode(model, images):
    result = {}
    shared = model.shared_bottleneck
    for task in model.tasks[:1] if shared else model.tasks:
        loc, scale = model.posterior(images, task.name, training=False)
        prefix = "" if shared else f"{task.name}_"
        result[f"{prefix}latent_mean"] = tf.cast(loc, tf.float32)
        result[f"{prefix}latent_scale"] = tf.cast(scale, tf.float32)
    return result


def export_savedmodel(model, base_dir, version=None, mc_samples=16, value_range=None, overwrite=False):
    """Writes `model` as `<base_dir>/<version>/`, a SavedModel for TF Serving.

    The export is written to a temporary folder beside the target and renamed
    into place, so an interrupted export leaves existing versions untouched.

    Args:
        model: a built `MultiTaskVIB` with a known input shape.
        base_dir: the model's base path (TF Serving's `--model_base_path`).
        version: positive int. Default value: one more than the largest
            version already there (1 for a new base).
        mc_samples: latent samples averaged by `predict_mc`. Default value: `16`.
        value_range: `(min, max)` of the input pixels, recorded in the metadata.
            Default value: the model's `input_range`, else `(0.0, 1.0)`.
        overwrite: replace an existing `version`.

    Returns:
        The path of the written version folder.
    """
    if getattr(model, "task_indexed", None) is None or getattr(model, "example_shape", None) is None:
        raise ValueError(
            "`model` must be a MultiTaskVIB or VMTL-family model built with `input_shape`, received "
            f"{type(model).__name__}."
        )
    validation.check_finite_weights(model)
    if value_range is None:
        value_range = getattr(model, "input_range", None) or (0.0, 1.0)
    if not isinstance(mc_samples, int) or mc_samples < 1:
        raise ValueError(f"`mc_samples` must be an int >= 1, received mc_samples={mc_samples!r}.")
    if not (len(value_range) == 2 and value_range[0] < value_range[1]):
        raise ValueError(f"`value_range` must be (min, max) with min < max, received {value_range!r}.")
    versions = existing_versions(base_dir)
    if version is None:
        version = (versions[-1] + 1) if versions else 1
    if not isinstance(version, (int, np.integer)) or isinstance(version, bool) or version < 1:
        raise ValueError(f"`version` must be a positive int, received version={version!r}.")
    target = os.path.join(base_dir, str(int(version)))
    if os.path.exists(target) and not overwrite:
        raise FileExistsError(f"{target} exists; pass overwrite=True or another version.")
    os.makedirs(base_dir, exist_ok=True)

    metadata = export_metadata(model, mc_samples, value_range)
    metadata["version"] = int(version)
    metadata_json = json.dumps(metadata, indent=1, sort_keys=True)
    # A leading dot keeps TF Serving from taking the partial export for a version.
    staging = tempfile.mkdtemp(prefix=".export-", dir=base_dir)
    try:
        asset_path = os.path.join(staging, METADATA_ASSET)
        with open(asset_path, "w") as f:
            f.write(metadata_json)
        module = _Serving(model, mc_samples, metadata_json, asset_path)
        written = os.path.join(staging, "savedmodel")
        tf.saved_model.save(module, written, signatures=module.serving_signatures)
        if os.path.exists(target):
            retired = os.path.join(staging, "retired")
            os.rename(target, retired)
        os.rename(written, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def read_metadata(export_dir):
    """The metadata dict of an exported version folder (reads the asset)."""
    with open(os.path.join(export_dir, "assets", METADATA_ASSET)) as f:
        return json.load(f)
