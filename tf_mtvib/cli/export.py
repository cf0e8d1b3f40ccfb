"""`tf-mtvib export`: a finished run's model as a TF Serving SavedModel version."""

from tf_mtvib.cli.arguments import require_positive
from tf_mtvib.cli.run_folder import RunFolder


def add_parser(subparsers):
    export = subparsers.add_parser("export", help="write a run's model as a TF Serving SavedModel version")
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, help="model base folder; the export goes to OUT/<version>")
    export.add_argument("--version", type=int, default=None, help="default: one more than the largest in OUT")
    export.add_argument("--mc-samples", type=int, default=16, help="latent samples averaged by predict_mc")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --version")


def run(args):
    require_positive(args, "version", "mc_samples")
    model, _ = RunFolder(args.run_dir).load()
    from tf_mtvib.export import export_savedmodel

    path = export_savedmodel(model, args.out, version=args.version, mc_samples=args.mc_samples,
                             overwrite=args.overwrite)
    print(f"SavedModel: {path}")
    return 0
