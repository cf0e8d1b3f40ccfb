"""Process settings that must be in place before TensorFlow is imported.

TensorFlow 2.21 leaves its oneDNN kernels off on many x86 CPUs; turning them
on nearly doubled the training throughput of the Table I MTVIB model on the
development machines (see benchmarks/RESULTS.md). ``setdefault`` keeps any
choice the user already made, and the setting has no effect when TensorFlow
was imported before tf_mtvib.
"""

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")
