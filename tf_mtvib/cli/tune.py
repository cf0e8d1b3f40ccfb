"""`tf-mtvib tune`: a keras-tuner search over MTVIB or GS settings; exports the best model."""

import os

from tf_mtvib.cli import families
from tf_mtvib.cli.arguments import add_device_flags, device_setup, require_positive, verbosity
from tf_mtvib.cli.errors import CommandError
from tf_mtvib.cli.report import print_accuracies

# Both hypermodels are MTVIB-paper systems.
FAMILY = families.MTVIB


def add_parser(subparsers):
    tune = subparsers.add_parser("tune", help="keras-tuner search over MTVIB or GS settings; exports the best model")
    tune.add_argument("--hypermodel", choices=("mtvib", "gs"), default="mtvib")
    tune.add_argument("--tuner", choices=("random", "hyperband", "bayesian", "grid"), default="random")
    tune.add_argument("--objective", choices=("joint", "robust"), default="joint",
                      help="validation joint accuracy, clean or under FGSM at --robust-eps")
    tune.add_argument("--robust-eps", type=float, default=0.1)
    tune.add_argument("--lr", type=float, default=FAMILY.defaults["lr"],
                      help="learning rate of GS trials (MTVIB searches it)")
    tune.add_argument("--max-trials", type=int, default=10)
    tune.add_argument("--epochs", type=int, default=2, help="epochs per trial (hyperband: the most per trial)")
    tune.add_argument("--dataset", default="sample", choices=FAMILY.datasets)
    tune.add_argument("--data-dir", default=None)
    tune.add_argument("--cache-dir", default=None)
    tune.add_argument("--num-train", type=int, default=None)
    tune.add_argument("--num-test", type=int, default=None)
    tune.add_argument("--val-fraction", type=float, default=0.1,
                      help="end of the training split held out for the objective")
    tune.add_argument("--batch-size", type=int, default=FAMILY.defaults["batch_size"])
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--out", default=None, help="search folder (default runs/tune-<hypermodel>-<dataset>)")
    tune.add_argument("--overwrite", action="store_true", help="start the search again instead of resuming it")
    tune.add_argument("--export", default=None,
                      help="SavedModel base folder for the best model (default OUT/savedmodel)")
    tune.add_argument("--verbose", default="0", help="Keras verbosity per trial: auto, 0, 1 or 2")
    add_device_flags(tune)


def _split_validation(data, fraction):
    """`(train, validation)`: the validation set is the end of the training split."""
    n_val = round(len(data.x_train) * fraction)
    if not 0 < n_val < len(data.x_train):
        raise CommandError(
            f"--val-fraction {fraction} leaves no validation or no training examples of {len(data.x_train)}."
        )
    cut = len(data.x_train) - n_val
    train = (data.x_train[:cut], {k: v[:cut] for k, v in data.y_train.items()})
    val = (data.x_train[cut:], {k: v[cut:] for k, v in data.y_train.items()})
    return train, val


def run(args):
    require_positive(args, "robust_eps", "lr", "max_trials", "epochs", "batch_size", "num_train", "num_test")
    verbose = verbosity(args)
    out = args.out or os.path.join("runs", f"tune-{args.hypermodel}-{args.dataset}")
    config = {
        "model": args.hypermodel, "dataset": args.dataset, "data_dir": args.data_dir and os.path.abspath(args.data_dir),
        "cache_dir": args.cache_dir, "num_train": args.num_train, "num_test": args.num_test, "seed": args.seed,
        "tuner": args.tuner, "objective": args.objective, "robust_eps": args.robust_eps,
        "max_trials": args.max_trials, "epochs": args.epochs, "val_fraction": args.val_fraction,
        "batch_size": args.batch_size,
    }
    strategy = device_setup(args)  # before any other TensorFlow op (multiworker needs it)
    from tf_mtvib import tuning

    role = tuning.search_role()  # None, or keras-tuner's 'chief' / 'worker' (KERASTUNER_* variables)
    data = FAMILY.load_data(config)
    config["data_sources"] = data.sources
    (x_train, y_train), (x_val, y_val) = _split_validation(data, args.val_fraction)

    import keras

    from tf_mtvib.data import atomic
    from tf_mtvib.export import export_savedmodel

    keras.utils.set_random_seed(args.seed)
    common = {"objective": args.objective, "robust_eps": args.robust_eps, "seed": args.seed}
    if args.hypermodel == "mtvib":
        hypermodel = tuning.MTVIBHyperModel(data.tasks, data.input_shape, **common)
    else:
        hypermodel = tuning.GSHyperModel(data.tasks, data.input_shape, learning_rate=args.lr, **common)
    tuner = tuning.make_tuner(
        hypermodel, args.tuner, max_trials=args.max_trials, directory=out, project_name="search",
        overwrite=args.overwrite and role != "worker", max_epochs=args.epochs, seed=args.seed,
        distribution_strategy=strategy,
    )
    fit_kwargs = {} if args.tuner == "hyperband" else {"epochs": args.epochs}
    tuner.search(x_train, y_train, validation_data=(x_val, y_val), batch_size=args.batch_size, verbose=verbose,
                 **fit_kwargs)
    if role == "worker":
        print(f"Tuner {tuner.tuner_id}: no trials left; the chief writes the results to {out}.")
        return 0
    best = tuner.get_best_models(1)[0]
    accuracies = FAMILY.evaluate(best, data)
    summary = {"best": tuning.best_trial_summary(tuner, args.max_trials), "test_accuracy_of_best": accuracies,
               "data_sources": data.sources}
    with atomic.atomic_path(os.path.join(out, "model.keras"), suffix=".keras") as tmp:
        best.save(tmp)
    atomic.write_json(os.path.join(out, "config.json"), config)
    atomic.write_json(os.path.join(out, "tuning.json"), summary)
    path = export_savedmodel(best, args.export or os.path.join(out, "savedmodel"))
    top = summary["best"][0]
    score = "no score (every trial failed)" if top["score"] is None else f"{top['score']:.4f}"
    print(f"Best trial {top['trial_id']}: {tuning.OBJECTIVES[args.objective]} = {score} with {top['hyperparameters']}")
    print_accuracies(f"Best model on the {args.dataset} test split ({len(data.x_test)} images):", accuracies)
    print(f"Search folder: {out}\nSavedModel: {path}")
    return 0
