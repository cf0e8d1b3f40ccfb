"""VMTL Tables 1-3 pattern on the offline domains: average test accuracy of
STL, bMTL, VSTL, VMTL-AC, VMTL and the prior ablations at 5 %, 10 % and 20 %
of each task for training, mean and 95 % interval over seeds.

    python benchmarks/vmtl_domains.py --data-dir ../shared/data --seeds 0 1 2 3 4

Each (fraction, seed, system) run is stored as JSON under --out and skipped
when it exists, so an interrupted run continues; the table is written from
whatever runs exist.
"""

import argparse
import json
import os
import platform
import time

import tf_mtvib  # noqa: F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras
import numpy as np

from tf_mtvib.data import atomic
from tf_mtvib.data.domains import load_domains, make_domain_dataset
from tf_mtvib.evaluation import domain_accuracies
from tf_mtvib.models.vmtl import VMTL_SYSTEMS, build_vmtl_system
from tf_mtvib.training import TemperatureAnnealing

HERE = os.path.dirname(os.path.abspath(__file__))
# Two-sided 95 % Student t quantiles by degrees of freedom.
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def run_one(system, fraction, seed, args):
    data = load_domains(args.domains, train_fraction=fraction, examples_per_task=args.examples_per_task,
                        data_dir=args.data_dir, seed=seed)
    keras.utils.set_random_seed(seed)
    variational = system not in ("stl", "bmtl")
    options = dict(kl_weight=args.kl_weight, kl_anneal_rate=args.kl_anneal_rate, mixture_kl=args.mixture_kl)
    model = build_vmtl_system(system, len(data.task_names), data.num_classes, data.input_shape,
                              dataset_sizes=data.train_sizes, latent_dim=args.latent_dim, seed=seed,
                              **(options if variational else {}))
    model.compile(keras.optimizers.Adam(args.lr))
    callbacks = [TemperatureAnnealing(1.0, args.temperature_decay, 0.5)] if variational else []
    start = time.time()
    model.fit(make_domain_dataset(data, "train", args.batch_per_task, seed=seed), epochs=args.epochs,
              callbacks=callbacks, verbose=0)
    seconds = time.time() - start
    per_task = domain_accuracies(model, data)
    average = per_task.pop("average")
    return {"system": system, "fraction": fraction, "seed": seed, "per_task": per_task,
            "average": average, "train_sizes": data.train_sizes,
            "seconds": seconds, "machine": f"{platform.machine()} {os.cpu_count()} CPUs"}


def table(results, fractions, systems):
    lines = ["| system | " + " | ".join(f"{int(100 * f)} %" for f in fractions) + " |",
             "| --- | " + " | ".join("---" for _ in fractions) + " |"]
    for system in systems:
        cells = []
        for fraction in fractions:
            values = [100 * r["average"] for r in results if r["system"] == system and r["fraction"] == fraction]
            if not values:
                cells.append("")
            elif len(values) == 1:
                cells.append(f"{values[0]:.1f} (1 seed)")
            else:
                half = T95.get(len(values) - 1, 1.96) * np.std(values, ddof=1) / np.sqrt(len(values))
                cells.append(f"{np.mean(values):.1f} ± {half:.1f} ({len(values)} seeds)")
        lines.append(f"| {system} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--domains", nargs="+", default=["mnist", "rotated", "digits"])
    parser.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--systems", nargs="+", default=list(VMTL_SYSTEMS))
    parser.add_argument("--examples-per-task", type=int, default=1800)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-per-task", type=int, default=32)
    parser.add_argument("--latent-dim", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--kl-weight", type=float, default=1.0, help="KL weight at the end of annealing (Eq. 13: 1)")
    parser.add_argument("--kl-anneal-rate", type=float, default=1e-6,
                        help="KL weight added per step (the paper's 1e-6); 0: --kl-weight from the start")
    parser.add_argument("--mixture-kl", default="monte-carlo", choices=("monte-carlo", "closed-form"))
    parser.add_argument("--temperature-decay", type=float, default=0.99, help="Gumbel-softmax tau decay per step")
    parser.add_argument("--out", default=os.path.join(HERE, "out", "vmtl_domains"))
    args = parser.parse_args()
    settings = (f"e{args.epochs}-lr{args.lr}-d{args.latent_dim}-kl{args.kl_weight}-r{args.kl_anneal_rate}"
                f"-{args.mixture_kl}-t{args.temperature_decay}")
    results = []
    for seed in args.seeds:
        for fraction in args.fractions:
            for system in args.systems:
                path = os.path.join(args.out, f"{system}-f{fraction}-s{seed}-{settings}.json")
                if not os.path.exists(path):
                    result = run_one(system, fraction, seed, args)
                    atomic.write_json(path, result)
                    print(f"{system:>22s} {fraction:.2f} seed {seed}: {100 * result['average']:.1f} % "
                          f"({result['seconds']:.0f} s)", flush=True)
                with open(path) as f:
                    results.append(json.load(f))
    text = table(results, args.fractions, args.systems)
    with atomic.atomic_path(os.path.join(args.out, f"table-{settings}.md")) as tmp:
        with open(tmp, "w") as f:
            f.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
