"""Data-parallel training with tf.distribute (and mixed precision on GPUs).

    python examples/distributed_training.py                     # all GPUs, or
    python examples/distributed_training.py --cpu-replicas 2    # try it on a CPU
    python examples/distributed_training.py --mixed-precision   # GPUs with tensor cores
"""

import argparse

import tf_mtvib  # noqa: F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras

import tf_mtvib as tm
from tf_mtvib import distribute
from tf_mtvib.data.pipeline import load_task_data, make_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--cpu-replicas", type=int, default=0, help="split the CPU into this many devices")
parser.add_argument("--mixed-precision", action="store_true")
parser.add_argument("--global-batch", type=int, default=200)
parser.add_argument("--epochs", type=int, default=3)
args = parser.parse_args()

if args.cpu_replicas:
    distribute.split_cpu(args.cpu_replicas)  # before any TensorFlow op
if args.mixed_precision:
    distribute.set_mixed_precision(True)
strategy = distribute.get_strategy("mirrored")
print("replicas:", strategy.num_replicas_in_sync)

data = load_task_data("sample")
with strategy.scope():  # variables are created once per replica
    model = tm.build_mtvib(data.tasks, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
# Batches carry the global batch; Keras splits them over the replicas.
train = make_dataset(data.x_train, data.y_train, args.global_batch, shuffle=True, seed=0)
model.fit(train, epochs=args.epochs)
print(tm.evaluation.task_accuracies(model, data.x_test, data.y_test))
