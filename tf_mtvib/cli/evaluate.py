"""`tf-mtvib evaluate`: the test accuracies of a finished run."""

from tf_mtvib.cli import families
from tf_mtvib.cli.arguments import require_positive
from tf_mtvib.cli.report import print_accuracies
from tf_mtvib.cli.run_folder import RunFolder


def add_parser(subparsers):
    evaluate = subparsers.add_parser("evaluate", help="per-task and joint accuracy of a finished run")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--mc-samples", type=int, default=1, help="latent samples averaged (1 = mean code)")
    evaluate.add_argument("--batch-size", type=int, default=500)


def run(args):
    require_positive(args, "mc_samples", "batch_size")
    run_folder = RunFolder(args.run_dir)
    model, config = run_folder.load()
    family = families.for_config(config)
    evaluation = family.evaluation(model, config, run_folder.load_data(family, config), args)
    print_accuracies(evaluation.title, evaluation.accuracies)
    run_folder.write_json(evaluation.file_name, evaluation.record)
    return 0
