"""Accuracy of a trained model under FGSM / PGD / MIM on one task and on both,
and the gradient-norm vulnerability measure (MTRobust Theorem 1).

    python examples/train_with_fit.py --epochs 3 --out mtvib.keras
    python examples/adversarial_evaluation.py mtvib.keras
"""

import argparse

import tf_mtvib  # noqa: F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras

from tf_mtvib import attacks
from tf_mtvib.data.pipeline import load_task_data

parser = argparse.ArgumentParser()
parser.add_argument("model", help="a .keras file saved from a MultiTaskVIB")
parser.add_argument("--num-test", type=int, default=1000)
args = parser.parse_args()

model = keras.models.load_model(args.model)
data = load_task_data("sample")
x, y = data.x_test[: args.num_test], {k: v[: args.num_test] for k, v in data.y_test.items()}

for attacked in (["top_left"], ["top_left", "bottom_right"]):
    for attack in ("fgsm", "pgd", "mim"):
        accuracy = attacks.adversarial_accuracy(model, x, y, attack, eps=0.1, tasks=attacked, nb_iter=10)
        cells = "  ".join(f"{k} {100 * v:5.1f}" for k, v in accuracy.items())
        print(f"{attack:>4s} eps 0.10 on {'+'.join(attacked):<24s} {cells}")

# One call, direct control: PGD-10 in the L-inf ball of radius 0.1, seeded random start.
x_adv = attacks.projected_gradient_descent(
    model, x[:500], y={k: v[:500] for k, v in y.items()}, eps=0.1, eps_iter=0.025, nb_iter=10,
    clip_min=0.0, clip_max=1.0, rand_init=True, seed=0,
)
print("largest perturbation:", float(abs(x_adv - x[:500]).numpy().max()))

print(
    "E ||dL/dx||_2:",
    attacks.vulnerability(model, x, y, [["top_left"], ["bottom_right"], ["top_left", "bottom_right"]]),
)
