"""Export a model for TF Serving and use it from a process that has only TensorFlow.

    python examples/export_and_serve.py mtvib.keras --out savedmodels/mtvib

TF Serving:  docker run -p 8501:8501 -v $PWD/savedmodels/mtvib:/models/mtvib \\
                 -e MODEL_NAME=mtvib tensorflow/serving
"""

import argparse
import subprocess
import sys

import tf_mtvib  # noqa: F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras

from tf_mtvib.export import export_savedmodel

parser = argparse.ArgumentParser()
parser.add_argument("model", help="a .keras file saved from a MultiTaskVIB")
parser.add_argument("--out", default="savedmodels/mtvib")
args = parser.parse_args()

version_dir = export_savedmodel(keras.models.load_model(args.model), args.out, mc_samples=16)
print("exported", version_dir)

# What a serving program does; it never imports tf_mtvib.
CLIENT = """
import json, sys
import numpy as np
import tensorflow as tf
served = tf.saved_model.load(sys.argv[1])
meta = json.loads(served.signatures["metadata"]()["json"].numpy())
images = tf.random.uniform([4] + meta["input_shape"], *meta["value_range"])
mean_code = served.signatures["serving_default"](images=images)
mc = served.signatures["predict_mc"](images=images)
for task in meta["tasks"]:
    name = task["name"]
    print(name, "class", mean_code[name + "_class"].numpy(), "entropy", np.round(mc[name + "_entropy"].numpy(), 3))
"""
subprocess.run([sys.executable, "-c", CLIENT, version_dir], check=True)
