"""`tf-mtvib robustness`: accuracy against eps per attack, written as a table and a plot."""

import os

from tf_mtvib.cli import families
from tf_mtvib.cli.arguments import require_positive
from tf_mtvib.cli.errors import CommandError
from tf_mtvib.cli.report import print_sweep
from tf_mtvib.cli.run_folder import RunFolder


def add_parser(subparsers):
    robustness = subparsers.add_parser("robustness", help="accuracy against eps per attack and attacked task set")
    robustness.add_argument("run_dir")
    robustness.add_argument("--attacks", nargs="+", choices=("fgsm", "pgd", "mim"), default=["fgsm"])
    robustness.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
    robustness.add_argument("--nb-iter", type=int, default=10)
    robustness.add_argument("--task-sets", nargs="+", default=None,
                            help="attacked task sets, tasks joined by ',' (default: each task and all)")
    robustness.add_argument("--modes", nargs="+", choices=("mean", "sampled"), default=None,
                            help="model modes scored (default: both when variational)")
    robustness.add_argument("--num-test", type=int, default=None,
                            help="test images used (default: all; with --dataset domains runs, per task)")
    robustness.add_argument("--batch-size", type=int, default=500)
    robustness.add_argument("--out", default=None, help="folder for the table and plot (default RUN_DIR/robustness)")


def run(args):
    if any(e < 0 for e in args.eps):
        raise CommandError(f"--eps values must be >= 0, received {args.eps}.")
    require_positive(args, "nb_iter", "num_test", "batch_size")
    run_folder = RunFolder(args.run_dir)
    model, config = run_folder.load()
    family = families.for_config(config)
    family.check_robustness(model, config, args)
    rows, extra_files = family.robustness(model, config, run_folder.load_data(family, config), args)

    from tf_mtvib.attacks import write_sweep
    from tf_mtvib.data import atomic

    out = args.out or os.path.join(args.run_dir, "robustness")
    write_sweep(rows, out, title=f"{config['model']} on {config['dataset']}")
    for name, payload in extra_files.items():
        atomic.write_json(os.path.join(out, name), payload)
    print_sweep(rows, family, out)
    return 0
