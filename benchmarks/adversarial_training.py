"""Multitask adversarial training against single-task (MTRobust Sec. 5.5).

Starts from the models clean_accuracy.py trained (MTVIB and GS on MultiMNIST)
and fine-tunes each for --epochs epochs on the first --num-train training
images in three ways, with the same optimizer and steps:
- clean: no attack (the control: the starting models are not converged, so
  clean fine-tuning alone moves both clean and adversarial accuracy);
- single: whole batches replaced by PGD examples against the top-left task;
- multi: whole batches replaced by PGD examples against both tasks
  (lambda_c = 1/2, MTRobust's multitask attack).
Training attacks use `AdversarialTraining`'s defaults: PGD-7, eps 0.1, step
2.5 eps / 7, random start, whole batches. Every model, before and after, is
scored on the first --num-test test images: clean accuracy, and accuracy
under PGD-10 (step 2.5 eps / 10, random start, seed 0) at eps 0.05 and 0.10,
attacking the top-left task alone and both tasks.

    python benchmarks/clean_accuracy.py --datasets multimnist --systems mtvib gs --epochs 2 \\
        --num-train 20000 --data-dir ../shared/data --out benchmarks/out/issue10/clean
    python benchmarks/adversarial_training.py --data-dir ../shared/data \\
        --models benchmarks/out/issue10/clean/models --num-train 10000 --num-test 1000

With --from-scratch nothing is loaded: each system is built afresh and trained
for --epochs epochs in the three ways, as Madry et al. and MTRobust train
(the "clean" run is then the control and there is no "before" row); --lr
should then be the clean training's (1e-4, the paper's).

    python benchmarks/adversarial_training.py --data-dir ../shared/data --from-scratch \\
        --num-train 20000 --epochs 2 --num-test 1000
"""

import argparse
import os
import platform
import time

import tf_mtvib  # noqa: F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras

from tf_mtvib import attacks
from tf_mtvib.data import atomic
from tf_mtvib.data.pipeline import load_task_data, make_dataset
from tf_mtvib.evaluation import task_accuracies
from tf_mtvib.models import build_model
from tf_mtvib.training import AdversarialTraining

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = ("top_left", "bottom_right")
ATTACKED = {"single": ["top_left"], "multi": list(TASKS)}
EPS = (0.05, 0.10)


def score(model, x, y):
    result = {"clean": task_accuracies(model, x, y)}
    for name, tasks in ATTACKED.items():
        for eps in EPS:
            result[f"pgd10-{name}-{eps}"] = attacks.adversarial_accuracy(
                model, x, y, "pgd", eps, tasks=tasks, nb_iter=10
            )
    return result


def train(path, system, training, data, args):
    """Fine-tunes the model saved at `path`, or trains `system` from scratch when `path` is None."""
    keras.utils.set_random_seed(args.seed)
    if path is None:
        model = build_model(system, data.tasks, input_shape=data.input_shape, seed=args.seed)
    else:
        model = keras.models.load_model(path)
    model.adversarial = None if training == "clean" else AdversarialTraining(tasks=ATTACKED[training], seed=args.seed)
    model.compile(keras.optimizers.Adam(args.lr))
    batches = make_dataset(data.x_train, data.y_train, args.batch_size, shuffle=True, seed=args.seed)
    start = time.time()
    model.fit(batches, epochs=args.epochs, verbose=2)
    return model, time.time() - start


def cell(result, key, task):
    return f"{100 * result[key][task]:.1f}"


def table(results, from_scratch=False):
    lines = [
        f"| system | {'training' if from_scratch else 'fine-tuning'} | clean TL / BR "
        "| PGD-10 on TL, eps 0.05 / 0.10: TL acc. "
        "| PGD-10 on both, eps 0.05 / 0.10: joint (TL / BR) | train s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for system, runs in results.items():
        for training, r in runs.items():
            s = r["scores"]
            multi = " / ".join(
                f"{cell(s, f'pgd10-multi-{e}', 'joint')} ({cell(s, f'pgd10-multi-{e}', 'top_left')} / "
                f"{cell(s, f'pgd10-multi-{e}', 'bottom_right')})" for e in EPS
            )
            lines.append(
                f"| {system.upper()} | {training} | "
                f"{cell(s, 'clean', 'top_left')} / {cell(s, 'clean', 'bottom_right')} | "
                f"{' / '.join(cell(s, f'pgd10-single-{e}', 'top_left') for e in EPS)} | "
                f"{multi} | {r.get('seconds', 0):.0f} |"
            )
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--from-scratch", action="store_true", help="train new models instead of fine-tuning")
    parser.add_argument("--models", default=os.path.join(HERE, "out", "issue10", "clean", "models"))
    parser.add_argument("--systems", nargs="+", default=["mtvib", "gs"])
    parser.add_argument("--pretrained-epochs", type=int, default=2)
    parser.add_argument(
        "--pretrain-num-train", type=int, default=20000, help="size of the set the models were trained on"
    )
    parser.add_argument("--num-train", type=int, default=10000, help="its first images used for fine-tuning")
    parser.add_argument("--num-test", type=int, default=1000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "out", "adversarial_training"))
    args = parser.parse_args()
    data = load_task_data(
        "multimnist", data_dir=args.data_dir, cache_dir=args.cache_dir, num_train=args.pretrain_num_train, seed=0
    )
    data.x_train, data.y_train = (
        data.x_train[: args.num_train],
        {k: v[: args.num_train] for k, v in data.y_train.items()},
    )
    x, y = data.x_test[: args.num_test], {k: v[: args.num_test] for k, v in data.y_test.items()}
    results = {}
    for system in args.systems:
        if args.from_scratch:
            path, results[system] = None, {}
        else:
            path = os.path.join(args.models, f"multimnist-{system}-e{args.pretrained_epochs}.keras")
            results[system] = {"before": {"scores": score(keras.models.load_model(path), x, y)}}
        for training in ("clean", "single", "multi"):
            print(f"== {system} {training}", flush=True)
            model, seconds = train(path, system, training, data, args)
            results[system][training] = {"scores": score(model, x, y), "seconds": seconds}
            print(table(results, args.from_scratch), flush=True)
    atomic.write_json(
        os.path.join(
            args.out,
            f"{'scratch' if args.from_scratch else 'finetune'}-{'-'.join(args.systems)}"
            f"-n{args.num_train}-t{args.num_test}-e{args.epochs}.json",
        ),
        {"args": vars(args), "machine": f"{platform.machine()} {os.cpu_count()} CPUs", "results": results},
    )
    print(table(results, args.from_scratch))


if __name__ == "__main__":
    main()
