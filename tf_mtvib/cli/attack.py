"""`tf-mtvib attack`: the accuracies of a finished run under one attack."""

from tf_mtvib.cli import families
from tf_mtvib.cli.arguments import require_positive
from tf_mtvib.cli.report import print_accuracies
from tf_mtvib.cli.run_folder import RunFolder


def add_parser(subparsers):
    attack = subparsers.add_parser("attack", help="per-task and joint accuracy of a run under one attack")
    attack.add_argument("run_dir")
    attack.add_argument("--attack", choices=("fgsm", "pgd", "mim"), default="fgsm")
    attack.add_argument("--eps", type=float, default=0.1)
    attack.add_argument("--nb-iter", type=int, default=10, help="steps of PGD / MIM")
    attack.add_argument("--tasks", nargs="+", default=None, help="attacked tasks (default: all)")
    attack.add_argument("--sampled", action="store_true", help="attack (EOT) and score the sampled model")
    attack.add_argument("--num-test", type=int, default=None, help="test images used (default: all)")
    attack.add_argument("--batch-size", type=int, default=500)


def run(args):
    require_positive(args, "eps", "nb_iter", "num_test", "batch_size")
    run_folder = RunFolder(args.run_dir)
    model, config = run_folder.load()
    family = families.for_config(config)
    family.check_attack(model, config, args)
    title, accuracies = family.attack(model, run_folder.load_data(family, config), args)
    print_accuracies(title, accuracies)
    return 0
