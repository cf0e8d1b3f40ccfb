"""Train MTVIB with plain `model.fit` on MultiMNIST and report per-task accuracy.

    python examples/train_with_fit.py --epochs 3            # embedded sample, no files needed
    python examples/train_with_fit.py --dataset multimnist --data-dir ../shared/data
"""

import argparse

import tf_mtvib  # noqa: F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras

import tf_mtvib as tm
from tf_mtvib.data.pipeline import load_task_data, make_dataset

parser = argparse.ArgumentParser()
parser.add_argument("--dataset", default="sample", choices=("sample", "multimnist", "multifashion"))
parser.add_argument("--data-dir", default=None)
parser.add_argument("--epochs", type=int, default=3)
parser.add_argument("--out", default="mtvib.keras")
args = parser.parse_args()

data = load_task_data(args.dataset, data_dir=args.data_dir)
keras.utils.set_random_seed(0)

# Shared Small AlexNet -> Gaussian bottleneck (d=256, beta=1e-3) -> one decoder
# per task, losses weighted by learned task uncertainty (MTVIB Eq. 23).
model = tm.build_mtvib(data.tasks, input_shape=data.input_shape, seed=0)
model.compile(optimizer=keras.optimizers.Adam(1e-3))

train = make_dataset(data.x_train, data.y_train, batch_size=100, shuffle=True, seed=0)
test = make_dataset(data.x_test, data.y_test, batch_size=500)
model.fit(train, validation_data=test, epochs=args.epochs)  # logs per-task loss/accuracy, sigmas, KL

for task, accuracy in tm.evaluation.task_accuracies(model, data.x_test, data.y_test).items():
    print(f"{task:>14s}: {100 * accuracy:.1f} %")
model.save(args.out)  # keras.models.load_model(args.out) restores it, compiled
