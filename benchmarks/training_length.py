"""Does longer training explain why our models break sooner than MTVIB Tables III-IV? (issue 10, item 4)

Reads the runs of `clean_accuracy.py --min-gain ...` (models kept after
epochs 2 and 10 and after the last epoch, per-epoch test accuracy on every
test image) and, for each kept model, runs the FGSM eta sweep on both tasks
(mean code, lambda_c = 1/M) on the first --num-test test images, with eta
applied to [0, 1] pixels and to normalized inputs ((x - mean) / std, i.e.
eps = eta * std). Writes a JSON and a Markdown table beside the paper's row.

    python benchmarks/clean_accuracy.py --datasets multifashion --systems mtvib uwl --epochs 30 \\
        --min-gain 0.2 --snapshots 2 10 --data-dir ../shared/data --out benchmarks/out/converged
    python benchmarks/training_length.py --runs benchmarks/out/converged --data-dir ../shared/data
"""

import argparse
import glob
import json
import os
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_mtvib  # noqa: E402,F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras  # noqa: E402
import numpy as np  # noqa: E402
from paper_tables import ETAS, TABLES  # noqa: E402

from tf_mtvib import attacks  # noqa: E402
from tf_mtvib.data import atomic  # noqa: E402
from tf_mtvib.data.pipeline import load_task_data  # noqa: E402

TASKS = ("top_left", "bottom_right")
SNAPSHOT = re.compile(r"(?P<run>[a-z]+-[a-z]+-e\d+)(?:-epoch(?P<epoch>\d+))?\.keras$")


def kept_models(runs):
    """`{(dataset, system): {epoch: model path}}`; the final model counts only once its run has finished."""
    found = {}
    for path in sorted(glob.glob(os.path.join(runs, "models", "*.keras"))):
        match = SNAPSHOT.search(os.path.basename(path))
        if not match:
            continue
        dataset, system, _ = match["run"].split("-")
        if match["epoch"]:
            epoch = int(match["epoch"])
        else:
            with open(os.path.join(runs, match["run"] + ".json")) as f:
                epoch = json.load(f)["epochs_trained"]
        found.setdefault((dataset, system), {})[epoch] = path
    return found


def sweep(model, x, y, factor):
    cache = attacks.AttackCache()
    return [
        attacks.adversarial_accuracy(model, x, y, "fgsm", eta * factor, tasks=list(TASKS), cache=cache)
        for eta in ETAS
    ]


def table(results):
    lines = []
    for (dataset, system), by_epoch in sorted(results.items()):
        epochs = sorted(by_epoch, key=int)
        lines += [f"### {dataset} {system.upper()}: FGSM on both tasks, accuracy (%) at eta "
                  + " / ".join(f"{e:g}" for e in ETAS), "",
                  "| task | scale | " + " | ".join(f"epoch {e}" for e in epochs) + " | paper (200 epochs) |",
                  "| --- | --- | " + " | ".join("---" for _ in epochs) + " | --- |"]
        for task in TASKS:
            paper = " / ".join(f"{v:.1f}" for v in TABLES.get(dataset, {}).get(system, {}).get(task, []))
            for scale in ("[0, 1]", "normalized"):
                cells = [" / ".join(f"{100 * r[task]:.1f}" for r in by_epoch[e][scale]) for e in epochs]
                beside = paper if scale == "[0, 1]" else ""
                lines.append(f"| {task} | {scale} | " + " | ".join(cells) + f" | {beside} |")
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default=os.path.join(os.path.dirname(__file__), "out", "converged"))
    parser.add_argument("--num-test", type=int, default=2000)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--out", default=None, help="default: <runs>/training_length.json")
    args = parser.parse_args()
    out = args.out or os.path.join(args.runs, "training_length.json")
    results = {}
    if os.path.exists(out):
        with open(out) as f:
            results = {tuple(k.split("/")): v for k, v in json.load(f)["results"].items()}
    for (dataset, system), models in sorted(kept_models(args.runs).items()):
        data = load_task_data(dataset, data_dir=args.data_dir, num_test=args.num_test, seed=0)
        x, y = data.x_test[: args.num_test], {k: v[: args.num_test] for k, v in data.y_test.items()}
        std = float(np.std(x))
        for epoch, path in sorted(models.items()):
            if str(epoch) in results.get((dataset, system), {}):
                continue
            print(f"== {dataset} {system} epoch {epoch}", flush=True)
            start = time.time()
            model = keras.models.load_model(path)
            results.setdefault((dataset, system), {})[str(epoch)] = {
                "[0, 1]": sweep(model, x, y, 1.0), "normalized": sweep(model, x, y, std),
                "pixel_std": std, "seconds": time.time() - start,
            }
            atomic.write_json(out, {"num_test": args.num_test, "etas": list(ETAS),
                                    "results": {"/".join(k): v for k, v in results.items()}})
    text = table(results)
    with atomic.atomic_path(out[: -len(".json")] + ".md") as tmp:
        with open(tmp, "w") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
