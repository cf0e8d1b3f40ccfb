"""Robustness of the five systems (MTVIB Tables III-IV; MTRobust Sec. 5).

Uses the models trained by clean_accuracy.py (benchmarks/out/clean_accuracy/models).
For each data set and system, on the first --num-test test images:
- the FGSM eta sweep 0..0.30 (mean code), attacking each task alone and both
  tasks together; the paper's numbers sit beside the attack its Eq. 25 uses
  (each task alone for the single-task systems STL / STVIB, the model's joint
  loss for GS / UWL / MTVIB);
- PGD-10 and MIM-10 at eps 0.05 and 0.10 on both tasks;
- the vulnerability E_x ||d L_all / d x||_2 for one and for two attacked tasks
  (lambda_c = 1/M, MTRobust Eq. 5);
- the three evaluation protocols side by side, FGSM on both tasks, for models
  with a bottleneck: the mean code attacked and scored (what the sweep above
  uses); the sampled model as MTVIB's paper evaluates it (the attack follows the
  gradient of one latent draw, the prediction averages the softmax of 12 draws);
  and the sampled model under an EOT attack (gradient averaged over 8 draws);
- the pixel scale of eta: the FGSM sweep on both tasks with eta applied to
  normalized inputs (x - mean) / std, i.e. eps = eta * std in [0, 1] units
  (std of the test images), and to [0, 255] pixels, eps = eta / 255;
- attack throughput (adversarial images/s, batch 500) for FGSM and PGD-10 on MTVIB.

    python benchmarks/robustness.py --data-dir ../shared/data --num-test 2000
    python benchmarks/robustness.py --data-dir ../shared/data --throughput-only   # on an idle machine
"""

import argparse
import glob
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_mtvib  # noqa: E402,F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
from paper_tables import ETAS, TABLES  # noqa: E402
from speed import ATTACK_BATCH, FGSM_THROUGHPUT, PGD_THROUGHPUT  # noqa: E402

from tf_mtvib import attacks  # noqa: E402
from tf_mtvib.data import atomic  # noqa: E402
from tf_mtvib.data.pipeline import load_task_data  # noqa: E402
from tf_mtvib.models import SYSTEMS  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TASKS = ("top_left", "bottom_right")


PROTOCOLS = {"sampled": 1, "sampled-eot": 8}  # EOT draws of the attack gradient
MC_SAMPLES = 12  # latent draws averaged by the sampled model's prediction (Alemi et al.)


def pixel_std(x):
    return float(np.std(x))


def evaluate_model(model, x, y):
    both = [list(TASKS)]
    rows = attacks.robustness_sweep(
        model, x, y, eps_values=ETAS, attacks=("fgsm",), task_sets=[["top_left"], ["bottom_right"], list(TASKS)],
        sampled=[False],
    )
    for name in ("pgd", "mim"):
        rows += attacks.robustness_sweep(
            model, x, y, eps_values=(0.05, 0.10), attacks=(name,), task_sets=both, sampled=[False], nb_iter=10
        )
    if getattr(model, "bottlenecks", None):
        for mode, draws in PROTOCOLS.items():
            sampled = attacks.robustness_sweep(model, x, y, eps_values=ETAS, task_sets=both, sampled=[True],
                                               mc_samples=MC_SAMPLES, eot_samples=draws)
            rows += [{**r, "mode": mode} for r in sampled]
    std = pixel_std(x)
    for scale, factor in (("normalized", std), ("255", 1 / 255)):
        for eta in ETAS:
            accuracy = attacks.adversarial_accuracy(model, x, y, "fgsm", eta * factor, tasks=list(TASKS))
            rows.append({"attack": "fgsm", "tasks": "+".join(TASKS), "eps": float(eta), "mode": f"eta-{scale}",
                         "eps_01": float(eta * factor), "accuracy": accuracy})
    measure = attacks.vulnerability(model, x, y, [["top_left"], ["bottom_right"], list(TASKS)])
    return {"rows": rows, "vulnerability": measure, "pixel_std": std}


def throughput(model, x, y, batch=ATTACK_BATCH):
    x, y = x[:batch], {k: v[:batch] for k, v in y.items()}
    result = {}
    cache = attacks.AttackCache()  # the timed calls reuse the trace of the first
    for name, call in (
        ("fgsm", lambda: attacks.fast_gradient_method(model, x, y=y, cache=cache, **FGSM_THROUGHPUT)),
        ("pgd10", lambda: attacks.projected_gradient_descent(model, x, y=y, seed=0, cache=cache, **PGD_THROUGHPUT)),
    ):
        call().numpy()  # trace
        start = time.perf_counter()
        for _ in range(3):
            call().numpy()
        result[name] = 3 * batch / (time.perf_counter() - start)
    return result


def fgsm_row(rows, task_set, task, mode="mean"):
    chosen = sorted(
        (r for r in rows if r["attack"] == "fgsm" and r["tasks"] == task_set and r.get("mode", "mean") == mode),
        key=lambda r: r["eps"],
    )
    return [100 * r["accuracy"][task] for r in chosen]


def system_tasks(entries, dataset):
    """`(system, task, result rows, the paper's FGSM row as text)` in table order."""
    for system in SYSTEMS:
        if system in entries:
            for task in TASKS:
                yield (
                    system,
                    task,
                    entries[system]["rows"],
                    " / ".join(f"{v:.1f}" for v in TABLES[dataset][system][task]),
                )


def fgsm_mode_table(entries, dataset, modes, labels):
    """Rows `| system | task | <label> | ours | paper |` for each mode in `modes` the results hold."""
    lines = ["| system | task | " + labels + " | ours (%) | paper (%) |", "| --- | --- | --- | --- | --- |"]
    both = "+".join(TASKS)
    for system, task, rows, paper in system_tasks(entries, dataset):
        for mode, label in modes.items():
            values = fgsm_row(rows, both, task, mode)
            if values:
                lines.append(
                    f"| {system.upper()} | {task} | {label} | {' / '.join(f'{v:.1f}' for v in values)} | {paper} |"
                )
    return lines


def tables(results, num_test):
    lines = []
    for dataset in TABLES:
        entries = {s: results[(d, s)] for (d, s) in results if d == dataset}
        if not entries:
            continue
        lines += [f"### {dataset}: FGSM, test accuracy (%) per eta {list(ETAS)} ({num_test} test images)", ""]
        lines += ["| system | task | attack | ours | paper |", "| --- | --- | --- | --- | --- |"]
        for system, task, rows, paper in system_tasks(entries, dataset):
            for task_set in (task, "+".join(TASKS)):
                ours = " / ".join(f"{v:.1f}" for v in fgsm_row(rows, task_set, task))
                label = "that task" if task_set == task else "both tasks"
                used = (system in ("stl", "stvib")) == (task_set == task)
                lines.append(f"| {system.upper()} | {task} | {label} | {ours} | {paper if used else ''} |")
        lines += [
            "", f"### {dataset}: iterative attacks on both tasks, joint / top-left / bottom-right accuracy (%)", ""
        ]
        lines += [
            "| system | PGD-10 eps 0.05 | PGD-10 eps 0.10 | MIM-10 eps 0.05 | MIM-10 eps 0.10 | FGSM eps 0.10 |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for system in SYSTEMS:
            if system not in entries:
                continue
            rows = entries[system]["rows"]
            cells = []
            for name, eps in (("pgd", 0.05), ("pgd", 0.10), ("mim", 0.05), ("mim", 0.10), ("fgsm", 0.10)):
                r = next(r for r in rows if r["attack"] == name and r["eps"] == eps and r["tasks"] == "+".join(TASKS))
                a = r["accuracy"]
                cells.append(f"{100 * a['joint']:.1f} / {100 * a['top_left']:.1f} / {100 * a['bottom_right']:.1f}")
            lines.append(f"| {system.upper()} | " + " | ".join(cells) + " |")
        lines += ["", f"### {dataset}: evaluation protocols, FGSM on both tasks, accuracy per eta {list(ETAS)}", ""]
        lines += fgsm_mode_table(
            entries,
            dataset,
            {
                "mean": "mean code",
                "sampled": f"sampled ({MC_SAMPLES} draws), 1-draw gradient",
                "sampled-eot": f"sampled ({MC_SAMPLES} draws), EOT-{PROTOCOLS['sampled-eot']} attack",
            },
            "protocol",
        )
        stds = sorted({round(e["pixel_std"], 4) for e in entries.values() if "pixel_std" in e})
        lines += ["", f"### {dataset}: pixel scale of eta, FGSM on both tasks, mean code (test pixel std {stds})", ""]
        lines += fgsm_mode_table(
            entries,
            dataset,
            {
                "mean": "[0, 1]: eps = eta",
                "eta-normalized": "normalized: eps = eta * std",
                "eta-255": "[0, 255]: eps = eta / 255",
            },
            "eta applied to",
        )
        lines += [
            "",
            f"### {dataset}: vulnerability E ||dL/dx||_2 (lambda_c = 1/M)",
            "",
            "| system | top_left | bottom_right | both |",
            "| --- | --- | --- | --- |",
        ]
        for system in SYSTEMS:
            if system in entries:
                v = entries[system]["vulnerability"]
                lines.append(
                    f"| {system.upper()} | {v['top_left']:.3f} | {v['bottom_right']:.3f} | "
                    f"{v['top_left+bottom_right']:.3f} |"
                )
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=os.path.join(HERE, "out", "clean_accuracy", "models"))
    parser.add_argument("--epochs", type=int, default=2, help="which trained models (e<epochs>) to load")
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=os.path.join(HERE, "out", "robustness"))
    parser.add_argument("--throughput-only", action="store_true",
                        help="only time FGSM and PGD-10 on each data set's MTVIB model")
    args = parser.parse_args()
    if args.throughput_only:
        for dataset in TABLES:
            path = os.path.join(args.models, f"{dataset}-mtvib-e{args.epochs}.keras")
            if os.path.exists(path):
                data = load_task_data(dataset, data_dir=args.data_dir, cache_dir=args.cache_dir, seed=0)
                speeds = throughput(keras.models.load_model(path), data.x_test, data.y_test)
                print(dataset, "mtvib adversarial images/s (batch 500):", {k: round(v) for k, v in speeds.items()})
        return
    results = {}
    for dataset in TABLES:
        paths = sorted(glob.glob(os.path.join(args.models, f"{dataset}-*-e{args.epochs}.keras")))
        if not paths:
            continue
        # Only the test split is used; its images do not depend on num_train.
        data = load_task_data(dataset, data_dir=args.data_dir, cache_dir=args.cache_dir, num_train=1, seed=0)
        x, y = data.x_test[: args.num_test], {k: v[: args.num_test] for k, v in data.y_test.items()}
        for path in paths:
            system = os.path.basename(path).split("-")[1]
            target = os.path.join(args.out, f"{dataset}-{system}-e{args.epochs}-n{args.num_test}.json")
            if not os.path.exists(target):
                print(f"== {dataset} {system}", flush=True)
                model = keras.models.load_model(path)
                start = time.time()
                result = evaluate_model(model, x, y)
                result["seconds"] = time.time() - start
                if system == "mtvib":
                    result["throughput_batch500"] = throughput(model, x, y)
                result["machine"] = f"{platform.machine()} {os.cpu_count()} CPUs"
                atomic.write_json(target, result)
            with open(target) as f:
                results[(dataset, system)] = json.load(f)
    text = tables(results, args.num_test)
    with atomic.atomic_path(os.path.join(args.out, f"tables-e{args.epochs}-n{args.num_test}.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    print(text)
    for (dataset, system), r in results.items():
        if "throughput_batch500" in r:
            print(dataset, system, "adversarial images/s:", {k: round(v) for k, v in r["throughput_batch500"].items()})


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
