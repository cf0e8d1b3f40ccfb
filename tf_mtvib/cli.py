"""`tf-mtvib` / `python -m tf_mtvib`: train, evaluate and attack the paper's systems."""

import argparse
import contextlib
import os
import sys
import time

from tf_mtvib import _env  # noqa: F401  (before TensorFlow)

MTVIB_MODELS = ("mtvib", "uwl", "gs", "stl", "stvib")
VMTL_MODELS = ("stl", "bmtl", "vstl", "vmtl", "vmtl-ac", "vmtl-mean", "vmtl-learned-weights")
PAPER_DEFAULTS = {"latent_dim": 256, "beta": 1e-3, "lr": 1e-4, "batch_size": 200}
# What `train` uses for a flag left out, per model family: the MTVIB paper's
# settings, and for the VMTL family those of benchmarks/vmtl_domains.py
# (RESULTS.md), under which every system of that family trains well.
FAMILY_DEFAULTS = {
    "mtvib": {"epochs": 1, "latent_dim": PAPER_DEFAULTS["latent_dim"], "lr": PAPER_DEFAULTS["lr"]},
    "vmtl": {"epochs": 50, "latent_dim": 128, "lr": 1e-3},
}
RUN_FILES = ("config.json", "metrics.json", "model.keras")
ADVERSARIAL_DEFAULTS = {"adv_eps": 0.1, "adv_steps": 7, "adv_fraction": 1.0, "adv_tasks": None}


def _parser():
    parser = argparse.ArgumentParser(prog="tf-mtvib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a model and evaluate it on the test split")
    train.add_argument("--model", default="mtvib", choices=MTVIB_MODELS + tuple(m for m in VMTL_MODELS if m != "stl"),
                       help="MTVIB-paper systems, or with --dataset domains the VMTL-paper systems")
    train.add_argument("--dataset", default="sample", choices=("sample", "multimnist", "multifashion", "mtfl", "domains"))
    train.add_argument("--data-dir", default=None, help="folder with the IDX files (or the MTFL folder); default $TF_MTVIB_DATA")
    train.add_argument("--cache-dir", default=None, help="where generated data sets are cached")
    train.add_argument("--num-train", type=int, default=None, help="training examples (default: all)")
    train.add_argument("--num-test", type=int, default=None, help="test examples (default: all)")
    train.add_argument("--epochs", type=int, default=None,
                       help=f"default {FAMILY_DEFAULTS['mtvib']['epochs']}, or {FAMILY_DEFAULTS['vmtl']['epochs']} "
                            "with --dataset domains")
    train.add_argument("--batch-size", type=int, default=PAPER_DEFAULTS["batch_size"])
    train.add_argument("--latent-dim", type=int, default=None,
                       help=f"default {FAMILY_DEFAULTS['mtvib']['latent_dim']}, or "
                            f"{FAMILY_DEFAULTS['vmtl']['latent_dim']} with --dataset domains")
    train.add_argument("--beta", type=float, default=PAPER_DEFAULTS["beta"])
    train.add_argument("--lr", type=float, default=None,
                       help=f"Adam's learning rate; default {FAMILY_DEFAULTS['mtvib']['lr']}, or "
                            f"{FAMILY_DEFAULTS['vmtl']['lr']} with --dataset domains")
    train.add_argument("--task-weights", type=float, nargs="+", default=None, help="fixed task weights for --model gs")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None, help="run folder (default runs/<model>-<dataset>)")
    train.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    train.add_argument("--verbose", default="auto", help="Keras verbosity: auto, 0, 1 or 2")
    train.add_argument("--adversarial", choices=("pgd", "fgsm"), default=None, help="train on attacked batches (MTRobust 5.5)")
    # None marks "not given": the --adv-* flags are refused without --adversarial (ADVERSARIAL_DEFAULTS).
    train.add_argument("--adv-eps", type=float, default=None, help="L-inf radius of the training attack (default 0.1)")
    train.add_argument("--adv-steps", type=int, default=None, help="PGD steps of the training attack (default 7)")
    train.add_argument("--adv-tasks", nargs="+", default=None, help="attacked tasks (default: all)")
    train.add_argument("--adv-fraction", type=float, default=None,
                       help="share of each batch attacked (default 1: whole batches, as Madry et al.)")
    domains = train.add_argument_group("--dataset domains (VMTL)")
    domains.add_argument("--domains", nargs="+", default=["mnist", "rotated", "digits"],
                         help="tasks: mnist, rotated, inverted, digits")
    domains.add_argument("--train-fraction", type=float, default=0.1, help="share of each task used for training")
    domains.add_argument("--examples-per-task", type=int, default=1800, help="examples of each MNIST-derived task")
    domains.add_argument("--batch-per-task", type=int, default=32)
    domains.add_argument("--kl-weight", type=float, default=1.0,
                         help="weight of the KLs once annealed (Eq. 13 has 1)")
    domains.add_argument("--kl-anneal-rate", type=float, default=1e-6,
                         help="KL weight added per step, from 0 (the paper's 1e-6); 0: --kl-weight from the start")
    domains.add_argument("--mixture-kl", choices=("monte-carlo", "closed-form"), default="monte-carlo",
                         help="KL to the mixture priors (see README)")
    domains.add_argument("--temperature-decay", type=float, default=0.99, help="Gumbel-softmax tau decay per step")
    domains.add_argument("--temperature-floor", type=float, default=0.5)
    _add_device_flags(train)

    export = sub.add_parser("export", help="write a run's model as a TF Serving SavedModel version")
    export.add_argument("run_dir")
    export.add_argument("--out", required=True, help="model base folder; the export goes to OUT/<version>")
    export.add_argument("--version", type=int, default=None, help="default: one more than the largest in OUT")
    export.add_argument("--mc-samples", type=int, default=16, help="latent samples averaged by predict_mc")
    export.add_argument("--overwrite", action="store_true", help="replace an existing --version")

    tune = sub.add_parser("tune", help="keras-tuner search over MTVIB or GS settings; exports the best model")
    tune.add_argument("--hypermodel", choices=("mtvib", "gs"), default="mtvib")
    tune.add_argument("--tuner", choices=("random", "hyperband", "bayesian", "grid"), default="random")
    tune.add_argument("--objective", choices=("joint", "robust"), default="joint",
                      help="validation joint accuracy, clean or under FGSM at --robust-eps")
    tune.add_argument("--robust-eps", type=float, default=0.1)
    tune.add_argument("--lr", type=float, default=PAPER_DEFAULTS["lr"], help="learning rate of GS trials (MTVIB searches it)")
    tune.add_argument("--max-trials", type=int, default=10)
    tune.add_argument("--epochs", type=int, default=2, help="epochs per trial (hyperband: the most per trial)")
    tune.add_argument("--dataset", default="sample", choices=("sample", "multimnist", "multifashion", "mtfl"))
    tune.add_argument("--data-dir", default=None)
    tune.add_argument("--cache-dir", default=None)
    tune.add_argument("--num-train", type=int, default=None)
    tune.add_argument("--num-test", type=int, default=None)
    tune.add_argument("--val-fraction", type=float, default=0.1, help="end of the training split held out for the objective")
    tune.add_argument("--batch-size", type=int, default=PAPER_DEFAULTS["batch_size"])
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--out", default=None, help="search folder (default runs/tune-<hypermodel>-<dataset>)")
    tune.add_argument("--overwrite", action="store_true", help="start the search again instead of resuming it")
    tune.add_argument("--export", default=None, help="SavedModel base folder for the best model (default OUT/savedmodel)")
    tune.add_argument("--verbose", default="0", help="Keras verbosity per trial: auto, 0, 1 or 2")
    _add_device_flags(tune)

    attack = sub.add_parser("attack", help="per-task and joint accuracy of a run under one attack")
    attack.add_argument("run_dir")
    attack.add_argument("--attack", choices=("fgsm", "pgd", "mim"), default="fgsm")
    attack.add_argument("--eps", type=float, default=0.1)
    attack.add_argument("--nb-iter", type=int, default=10, help="steps of PGD / MIM")
    attack.add_argument("--tasks", nargs="+", default=None, help="attacked tasks (default: all)")
    attack.add_argument("--sampled", action="store_true", help="attack (EOT) and score the sampled model")
    attack.add_argument("--num-test", type=int, default=None, help="test images used (default: all)")
    attack.add_argument("--batch-size", type=int, default=500)

    robustness = sub.add_parser("robustness", help="accuracy against eps per attack and attacked task set")
    robustness.add_argument("run_dir")
    robustness.add_argument("--attacks", nargs="+", choices=("fgsm", "pgd", "mim"), default=["fgsm"])
    robustness.add_argument("--eps", type=float, nargs="+", default=[0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30])
    robustness.add_argument("--nb-iter", type=int, default=10)
    robustness.add_argument("--task-sets", nargs="+", default=None, help="attacked task sets, tasks joined by ',' (default: each task and all)")
    robustness.add_argument("--modes", nargs="+", choices=("mean", "sampled"), default=None, help="model modes scored (default: both when variational)")
    robustness.add_argument("--num-test", type=int, default=None)
    robustness.add_argument("--batch-size", type=int, default=500)
    robustness.add_argument("--out", default=None, help="folder for the table and plot (default RUN_DIR/robustness)")

    evaluate = sub.add_parser("evaluate", help="per-task and joint accuracy of a finished run")
    evaluate.add_argument("run_dir")
    evaluate.add_argument("--mc-samples", type=int, default=1, help="latent samples averaged (1 = mean code)")
    evaluate.add_argument("--batch-size", type=int, default=500)
    return parser


def _add_device_flags(parser):
    parser.add_argument("--strategy", choices=("auto", "default", "mirrored", "multiworker"), default="default",
                        help="tf.distribute strategy; --batch-size is the global batch")
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_float16 compute (GPUs)")


def _device_setup(args):
    from tf_mtvib import distribute

    if args.mixed_precision:
        distribute.set_mixed_precision(True)
    return distribute.get_strategy(args.strategy)


def _positive(args, *names):
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise SystemExit(f"tf-mtvib: --{name.replace('_', '-')} must be positive, received {value}.")


def _print_accuracies(title, accuracies):
    print(title)
    for name, value in accuracies.items():
        print(f"  {name:>14s}: {100 * value:6.2f} %")


def _load_data(config):
    """The data of `config`; for a finished run's config, only if its source
    files have the SHA-256 the run recorded."""
    if config["dataset"] == "domains":
        from tf_mtvib.data.domains import load_domains

        data = load_domains(
            config["domains"], train_fraction=config["train_fraction"],
            examples_per_task=config["examples_per_task"], data_dir=config.get("data_dir"), seed=config["seed"],
        )
    else:
        from tf_mtvib.data.pipeline import load_task_data

        data = load_task_data(
            config["dataset"],
            data_dir=config.get("data_dir"),
            cache_dir=config.get("cache_dir"),
            num_train=config.get("num_train"),
            num_test=config.get("num_test"),
            seed=config["seed"],
        )
    recorded = config.get("data_sources")
    if recorded is not None:
        found = {name: source["sha256"] for name, source in data.sources.items()}
        differing = sorted(n for n in found.keys() | recorded.keys() if recorded.get(n, {}).get("sha256") != found.get(n))
        if differing:
            where = "; ".join(
                f"{n}: the run used {recorded.get(n, {}).get('folder')}, found {data.sources.get(n, {}).get('folder')}"
                for n in differing
            )
            raise ValueError(
                f"The run was made from other files than those found now (their SHA-256 differ from config.json's "
                f"'data_sources'): {where}. Pass --data-dir (or set TF_MTVIB_DATA) to the run's folder."
            )
    return data


def _adversarial_flags(args):
    """Refuses --adv-* flags without --adversarial (they would do nothing) and
    fills in the defaults of those not given."""
    given = [f"--{k.replace('_', '-')}" for k in ADVERSARIAL_DEFAULTS if getattr(args, k) is not None]
    if given and not args.adversarial:
        raise SystemExit(f"tf-mtvib: {', '.join(given)} only act(s) with --adversarial pgd|fgsm; add it or drop them.")
    for key, default in ADVERSARIAL_DEFAULTS.items():
        if getattr(args, key) is None:
            setattr(args, key, default)


def _family_defaults(args):
    family = FAMILY_DEFAULTS["vmtl" if args.dataset == "domains" else "mtvib"]
    for flag, value in family.items():
        if getattr(args, flag) is None:
            setattr(args, flag, value)


def train(args):
    _family_defaults(args)
    _adversarial_flags(args)
    _positive(args, "epochs", "batch_size", "latent_dim", "lr", "num_train", "num_test", "adv_eps", "adv_steps")
    if args.dataset == "domains" and args.model not in VMTL_MODELS:
        raise ValueError(f"--dataset domains trains {VMTL_MODELS}, received --model {args.model}.")
    if args.dataset != "domains" and args.model not in MTVIB_MODELS:
        raise ValueError(f"--model {args.model} needs --dataset domains.")
    if args.dataset == "domains":
        return _train_domains(args)
    if args.beta < 0:
        raise SystemExit(f"tf-mtvib: --beta must be >= 0, received {args.beta}.")
    out = args.out or os.path.join("runs", f"{args.model}-{args.dataset}")
    config = {k: v for k, v in vars(args).items() if k not in ("command", "out", "overwrite", "verbose", "strategy")}
    if config["data_dir"]:
        config["data_dir"] = os.path.abspath(config["data_dir"])
    if os.path.exists(os.path.join(out, "model.keras")) and not args.overwrite:
        raise SystemExit(f"tf-mtvib: {out} already holds a trained model; pass --overwrite or another --out.")
    checkpoint_dir = _check_resumable(out, config, args.overwrite)

    import keras

    from tf_mtvib import distribute
    from tf_mtvib.data import atomic
    from tf_mtvib.data.pipeline import make_dataset
    from tf_mtvib.data.validation import check_finite_weights
    from tf_mtvib.evaluation import task_accuracies
    from tf_mtvib.training import AdversarialTraining, EpochCheckpoint, StopOnNonFiniteLoss

    strategy = _device_setup(args)  # before any other TensorFlow op (multiworker needs it)
    folder = distribute.write_folder(out, strategy)  # `out` on the chief, a temporary folder elsewhere
    adversarial = None
    if args.adversarial:
        adversarial = AdversarialTraining(
            args.adversarial, eps=args.adv_eps, nb_iter=args.adv_steps, fraction=args.adv_fraction,
            tasks=args.adv_tasks, seed=args.seed,
        )
    data = _load_data(config)  # validated before anything is written
    config["data_sources"] = data.sources
    if args.adv_tasks:
        unknown = sorted(set(args.adv_tasks) - {t.name for t in data.tasks})
        if unknown:
            raise ValueError(f"--adv-tasks names unknown task(s) {unknown}; the tasks are {[t.name for t in data.tasks]}.")
    keras.utils.set_random_seed(args.seed)
    with strategy.scope():
        model, state = _build_or_restore(args, data, adversarial, checkpoint_dir)
    _begin_run(out, folder, config, strategy, state["epoch"], checkpoint_dir)

    if strategy.num_replicas_in_sync > 1:
        print(f"Training on {strategy.num_replicas_in_sync} replicas, global batch {args.batch_size}.")
    train_ds = distribute.shard_by_data(make_dataset(data.x_train, data.y_train, args.batch_size, shuffle=True, seed=args.seed))
    test_ds = distribute.shard_by_data(make_dataset(data.x_test, data.y_test, 500))
    checkpoint = EpochCheckpoint(os.path.join(folder, "checkpoint"), history=state["history"])
    verbose = args.verbose if args.verbose == "auto" else int(args.verbose)
    start = time.time()
    if state["epoch"] < args.epochs:
        with _stop_if_diverged(checkpoint_dir):
            model.fit(
                train_ds,
                epochs=args.epochs,
                initial_epoch=state["epoch"],
                validation_data=test_ds,
                callbacks=[keras.callbacks.TensorBoard(os.path.join(folder, "logs")), StopOnNonFiniteLoss(), checkpoint],
                verbose=verbose,
            )
    seconds = time.time() - start
    check_finite_weights(model, f"The trained {args.model} model")
    accuracies = task_accuracies(model, data.x_test, data.y_test)
    metrics = {
        "test_accuracy": accuracies,
        "history": checkpoint.history,
        "train_seconds": seconds,
        "train_examples": int(len(data.x_train)),
        "test_examples": int(len(data.x_test)),
        "data_sources": data.sources,
    }
    with atomic.atomic_path(os.path.join(folder, "model.keras"), suffix=".keras") as tmp:
        model.save(tmp)
    atomic.write_json(os.path.join(folder, "metrics.json"), metrics)
    _print_accuracies(f"{args.model} on {args.dataset} test split ({len(data.x_test)} images):", accuracies)
    _print_run_folder(out, strategy, model)
    return 0


def _check_resumable(out, config, overwrite):
    """`OUT/checkpoint`, after checking that an interrupted run there had the same settings."""
    checkpoint_dir = os.path.join(out, "checkpoint")
    saved_config = os.path.join(out, "config.json")
    if os.path.exists(os.path.join(checkpoint_dir, "state.json")) and os.path.isfile(saved_config):
        from tf_mtvib.data.atomic import read_json

        previous = read_json(saved_config, "pass --overwrite to start the run again")
        changed = {k for k in config if k != "epochs" and previous.get(k) != config[k]}
        if changed and not overwrite:
            raise SystemExit(
                f"tf-mtvib: {out} holds an interrupted run with other settings ({', '.join(sorted(changed))}); "
                "pass --overwrite to start again or another --out."
            )
        if not overwrite and previous.get("data_sources"):
            # _load_data then refuses files other than those the run began with.
            config["data_sources"] = previous["data_sources"]
    return checkpoint_dir


@contextlib.contextmanager
def _stop_if_diverged(checkpoint_dir=None):
    """Turns `TrainingDiverged` into the CLI's error, saying which checkpoint is kept."""
    from tf_mtvib.training import TrainingDiverged

    try:
        yield
    except TrainingDiverged as error:
        state = os.path.join(checkpoint_dir or "", "state.json")
        if checkpoint_dir and os.path.isfile(state):
            from tf_mtvib.data.atomic import read_json

            try:
                epoch = read_json(state, "").get("epoch")
                kept = f"the last good checkpoint (after epoch {epoch}) stays in {checkpoint_dir}"
            except ValueError:
                kept = f"the checkpoint in {checkpoint_dir} is damaged"
        else:
            kept = "no epoch finished, so no checkpoint was kept"
        raise SystemExit(
            f"tf-mtvib: {str(error).rstrip('.')}. No model or metrics were written; {kept}. "
            "Pass --overwrite to start again with other settings."
        ) from None


def _train_domains(args):
    if args.adversarial:
        raise SystemExit("tf-mtvib: --adversarial trains MTVIB-paper systems; --dataset domains does not support it.")
    _positive(args, "train_fraction", "examples_per_task", "batch_per_task", "temperature_floor")
    for flag in ("kl_weight", "kl_anneal_rate"):
        if getattr(args, flag) < 0:
            raise ValueError(f"--{flag.replace('_', '-')} must be >= 0, received {getattr(args, flag)}.")
    out = args.out or os.path.join("runs", f"{args.model}-domains")
    if os.path.exists(os.path.join(out, "model.keras")) and not args.overwrite:
        raise SystemExit(f"tf-mtvib: {out} already holds a trained model; pass --overwrite or another --out.")
    config = {
        k: getattr(args, k) for k in (
            "model", "dataset", "domains", "train_fraction", "examples_per_task", "batch_per_task", "epochs",
            "latent_dim", "lr", "seed", "kl_weight", "kl_anneal_rate", "mixture_kl", "temperature_decay",
            "temperature_floor",
        )
    }
    config["data_dir"] = args.data_dir and os.path.abspath(args.data_dir)
    checkpoint_dir = _check_resumable(out, config, args.overwrite)
    strategy = _device_setup(args)  # before any other TensorFlow op (multiworker needs it)
    data = _load_data(config)
    config["data_sources"] = data.sources

    import keras

    from tf_mtvib import distribute
    from tf_mtvib.data import atomic
    from tf_mtvib.data.domains import make_domain_dataset
    from tf_mtvib.data.validation import check_finite_weights
    from tf_mtvib.evaluation import domain_accuracies
    from tf_mtvib.models.vmtl import build_vmtl_system
    from tf_mtvib.training import EpochCheckpoint, StopOnNonFiniteLoss, TemperatureAnnealing

    keras.utils.set_random_seed(args.seed)
    folder = distribute.write_folder(out, strategy)  # `out` on the chief, a temporary folder elsewhere
    with strategy.scope():
        model, state = (None, None) if args.overwrite else EpochCheckpoint.restore(
            checkpoint_dir, "pass --overwrite to start the run again")
        if model is None:
            model = build_vmtl_system(
                args.model, len(data.task_names), data.num_classes, data.input_shape, dataset_sizes=data.train_sizes,
                latent_dim=args.latent_dim, seed=args.seed, task_names=data.task_names,
                **({} if args.model in ("stl", "bmtl") else dict(
                    kl_weight=args.kl_weight, kl_anneal_rate=args.kl_anneal_rate, mixture_kl=args.mixture_kl)),
            )
            model.compile(optimizer=keras.optimizers.Adam(args.lr))
            state = {"epoch": 0, "history": {}}
    _begin_run(out, folder, config, strategy, state["epoch"], checkpoint_dir)
    train_ds = distribute.shard_by_data(make_domain_dataset(data, "train", args.batch_per_task, seed=args.seed))
    # VMTL epochs are short: save at most every 10 s (and after the last epoch).
    checkpoint = EpochCheckpoint(os.path.join(folder, "checkpoint"), history=state["history"], min_interval=10.0)
    callbacks = [keras.callbacks.TensorBoard(os.path.join(folder, "logs"))]
    if args.model not in ("stl", "bmtl"):
        callbacks.append(
            TemperatureAnnealing(1.0, rate=args.temperature_decay, floor=min(1.0, args.temperature_floor)))
    callbacks.append(checkpoint)  # last, so that it saves the logs the others add
    start = time.time()
    with _stop_if_diverged(checkpoint_dir):
        if state["epoch"] < args.epochs:
            model.fit(train_ds, epochs=args.epochs, initial_epoch=state["epoch"],
                      callbacks=[StopOnNonFiniteLoss(), *callbacks],
                      verbose=args.verbose if args.verbose == "auto" else int(args.verbose))
    seconds = time.time() - start
    check_finite_weights(model, f"The trained {args.model} model")
    history = checkpoint.history
    accuracies = domain_accuracies(model, data)
    with atomic.atomic_path(os.path.join(folder, "model.keras"), suffix=".keras") as tmp:
        model.save(tmp)
    atomic.write_json(os.path.join(folder, "metrics.json"), {
        "test_accuracy": accuracies, "history": history,
        "train_seconds": seconds, "train_examples": data.train_sizes, "data_sources": data.sources,
    })
    _print_accuracies(f"{args.model} on {', '.join(data.task_names)} ({args.train_fraction:.0%} for training):", accuracies)
    _print_run_folder(out, strategy, model)
    return 0


def _begin_run(out, folder, config, strategy, restored_epoch, checkpoint_dir):
    """Checks that every worker resumes from the same epoch, says when a run
    resumes, and writes config.json (into `folder`: `out` on the chief)."""
    from tf_mtvib import distribute
    from tf_mtvib.data import atomic

    distribute.check_same_on_all_workers(
        strategy, restored_epoch, f"the epoch restored from {checkpoint_dir} (--out must be a folder every worker reads)"
    )
    if restored_epoch:
        print(f"Resuming {out} after epoch {restored_epoch}.")
    os.makedirs(folder, exist_ok=True)
    atomic.write_json(os.path.join(folder, "config.json"), config)


def _print_run_folder(out, strategy, model):
    from tf_mtvib import distribute

    task_type, task_id = distribute.worker_role(strategy)
    if task_type is not None:
        role = "chief" if distribute.is_chief(strategy) else "not the chief: its files go to a temporary folder"
        print(f"Worker {task_type}:{task_id} ({role}); weights fingerprint {distribute.weights_fingerprint(model)}")
    print(f"Run folder: {out}")


def _build_or_restore(args, data, adversarial, checkpoint_dir):
    import keras

    from tf_mtvib.models import build_model
    from tf_mtvib.training import EpochCheckpoint

    if not args.overwrite:
        model, state = EpochCheckpoint.restore(checkpoint_dir, "pass --overwrite to start the run again")
        if model is not None:
            return model, state
    model = build_model(
        args.model,
        data.tasks,
        input_shape=data.input_shape,
        latent_dim=args.latent_dim,
        beta=args.beta,
        task_weights=args.task_weights,
        seed=args.seed,
        adversarial=adversarial,
    )
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    return model, {"epoch": 0, "history": {}}


def _load_run(run_dir):
    """The run's model and settings; refuses damaged files, models that
    tf-mtvib did not build and models with NaN / Inf weights."""
    model_path = os.path.join(run_dir, "model.keras")
    config_path = os.path.join(run_dir, "config.json")
    for path in (model_path, config_path):
        if not os.path.isfile(path):
            raise SystemExit(f"tf-mtvib: {run_dir} is not a finished run: {path} is missing.")
    from tf_mtvib.data.atomic import read_json
    from tf_mtvib.data.validation import check_finite_weights
    from tf_mtvib.training.callbacks import load_model_file

    remedy = f"train the run again (`tf-mtvib train ... --out {run_dir} --overwrite`)"
    config = read_json(config_path, remedy)
    model = load_model_file(model_path, remedy)
    if getattr(model, "task_indexed", None) is None:
        raise ValueError(
            f"{model_path} holds a {type(model).__name__} model {model.name!r}, not one that tf-mtvib built "
            "(MultiTaskVIB or a VMTL-family model); tf-mtvib commands read only run folders written by "
            "`tf-mtvib train`."
        )
    check_finite_weights(model, model_path)
    return model, config


def _test_split(config, num_test):
    data = _load_data(config)
    x, y = data.x_test, data.y_test
    if num_test:
        x, y = x[:num_test], {k: v[:num_test] for k, v in y.items()}
    return x, y


def _check_tasks(model, tasks, flag):
    unknown = sorted(set(tasks) - set(model.task_names))
    if unknown:
        raise ValueError(f"{flag} names unknown task(s) {unknown}; the model's tasks are {model.task_names}.")


def attack(args):
    _positive(args, "eps", "nb_iter", "num_test", "batch_size")
    model, config = _load_run(args.run_dir)
    if config["dataset"] == "domains":
        raise ValueError("runs on --dataset domains are attacked with `tf-mtvib robustness RUN_DIR --eps ...`.")
    from tf_mtvib.attacks import adversarial_accuracy

    if args.tasks:
        _check_tasks(model, args.tasks, "--tasks")
    if args.sampled and not model.bottlenecks:
        raise ValueError(f"--sampled needs a variational model; {config['model']} has no bottleneck.")
    x, y = _test_split(config, args.num_test)
    accuracies = adversarial_accuracy(
        model, x, y, args.attack, args.eps, tasks=args.tasks, batch_size=args.batch_size,
        sampled=args.sampled, nb_iter=args.nb_iter,
    )
    attacked = ", ".join(args.tasks or model.task_names)
    mode = "sampled model" if args.sampled else "mean code"
    _print_accuracies(f"{args.attack.upper()} eps={args.eps} on {attacked} ({mode}, {len(x)} test images):", accuracies)
    return 0


def robustness(args):
    if any(e < 0 for e in args.eps):
        raise SystemExit(f"tf-mtvib: --eps values must be >= 0, received {args.eps}.")
    _positive(args, "nb_iter", "num_test", "batch_size")
    model, config = _load_run(args.run_dir)
    from tf_mtvib.attacks import robustness_sweep, task_indexed_sweep, vulnerability, write_sweep

    if config["dataset"] == "domains":
        data = _load_data(config)
        rows = []
        for name in args.attacks:
            rows += task_indexed_sweep(model, data.x_test, data.task_test, data.y_test, args.eps, attack=name,
                                       batch_size=args.batch_size, nb_iter=args.nb_iter)
        out = args.out or os.path.join(args.run_dir, "robustness")
        write_sweep(rows, out, title=f"{config['model']} on domains")
        for r in rows:
            accuracy = "  ".join(f"{k} {100 * v:5.1f}" for k, v in r["accuracy"].items())
            print(f"{r['attack']:>4s} eps {r['eps']:.2f}: {accuracy}")
        print(f"Table and plot: {out}/robustness.{{json,csv,png}}")
        return 0

    task_sets = None
    if args.task_sets:
        task_sets = [s.split(",") for s in args.task_sets]
        for task_set in task_sets:
            _check_tasks(model, task_set, "--task-sets")
    modes = None
    if args.modes:
        if "sampled" in args.modes and not model.bottlenecks:
            raise ValueError(f"--modes sampled needs a variational model; {config['model']} has no bottleneck.")
        modes = [m == "sampled" for m in args.modes]
    x, y = _test_split(config, args.num_test)
    rows = robustness_sweep(
        model, x, y, eps_values=args.eps, attacks=args.attacks, task_sets=task_sets, sampled=modes,
        batch_size=args.batch_size, nb_iter=args.nb_iter,
    )
    out = args.out or os.path.join(args.run_dir, "robustness")
    write_sweep(rows, out, title=f"{config['model']} on {config['dataset']}")
    sets = task_sets or [[t] for t in model.task_names] + [model.task_names]
    from tf_mtvib.data import atomic

    atomic.write_json(os.path.join(out, "vulnerability.json"), vulnerability(model, x, y, sets, batch_size=args.batch_size))
    for r in rows:
        accuracy = "  ".join(f"{k} {100 * v:5.1f}" for k, v in r["accuracy"].items())
        print(f"{r['attack']:>4s} on {r['tasks']:<24s} {r['mode']:<7s} eps {r['eps']:.2f}: {accuracy}")
    print(f"Table and plot: {out}/robustness.{{json,csv,png}}")
    return 0


def evaluate(args):
    _positive(args, "mc_samples", "batch_size")
    model, config = _load_run(args.run_dir)
    from tf_mtvib.data import atomic
    from tf_mtvib.evaluation import domain_accuracies, task_accuracies

    if config["dataset"] == "domains":
        accuracies = domain_accuracies(model, _load_data(config))
        _print_accuracies(f"{config['model']} on domains test split:", accuracies)
        atomic.write_json(os.path.join(args.run_dir, "eval.json"), {"test_accuracy": accuracies})
        return 0

    for bottleneck in getattr(model, "bottlenecks", []):
        bottleneck.num_samples = args.mc_samples
    data = _load_data(config)
    accuracies = task_accuracies(model, data.x_test, data.y_test, batch_size=args.batch_size)
    mode = "mean code" if args.mc_samples == 1 else f"{args.mc_samples} latent samples"
    _print_accuracies(f"{config['model']} on {config['dataset']} test split ({mode}):", accuracies)
    atomic.write_json(
        os.path.join(args.run_dir, f"eval-mc{args.mc_samples}.json"),
        {"test_accuracy": accuracies, "mc_samples": args.mc_samples},
    )
    return 0


def export(args):
    _positive(args, "version", "mc_samples")
    model, _ = _load_run(args.run_dir)
    from tf_mtvib.export import export_savedmodel

    path = export_savedmodel(model, args.out, version=args.version, mc_samples=args.mc_samples, overwrite=args.overwrite)
    print(f"SavedModel: {path}")
    return 0


def _split_validation(data, fraction):
    n_val = int(round(len(data.x_train) * fraction))
    if not 0 < n_val < len(data.x_train):
        raise ValueError(
            f"--val-fraction {fraction} leaves no validation or no training examples of {len(data.x_train)}."
        )
    cut = len(data.x_train) - n_val
    train = (data.x_train[:cut], {k: v[:cut] for k, v in data.y_train.items()})
    val = (data.x_train[cut:], {k: v[cut:] for k, v in data.y_train.items()})
    return train, val


def tune(args):
    _positive(args, "robust_eps", "lr", "max_trials", "epochs", "batch_size", "num_train", "num_test")
    out = args.out or os.path.join("runs", f"tune-{args.hypermodel}-{args.dataset}")
    config = {
        "model": args.hypermodel, "dataset": args.dataset, "data_dir": args.data_dir and os.path.abspath(args.data_dir),
        "cache_dir": args.cache_dir, "num_train": args.num_train, "num_test": args.num_test, "seed": args.seed,
        "tuner": args.tuner, "objective": args.objective, "robust_eps": args.robust_eps,
        "max_trials": args.max_trials, "epochs": args.epochs, "val_fraction": args.val_fraction,
        "batch_size": args.batch_size,
    }
    strategy = _device_setup(args)  # before any other TensorFlow op (multiworker needs it)
    from tf_mtvib import tuning

    role = tuning.search_role()  # None, or keras-tuner's 'chief' / 'worker' (KERASTUNER_* variables)
    data = _load_data(config)
    config["data_sources"] = data.sources
    (x_train, y_train), (x_val, y_val) = _split_validation(data, args.val_fraction)

    import keras

    from tf_mtvib.data import atomic
    from tf_mtvib.evaluation import task_accuracies
    from tf_mtvib.export import export_savedmodel

    keras.utils.set_random_seed(args.seed)
    common = dict(objective=args.objective, robust_eps=args.robust_eps, seed=args.seed)
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
    tuner.search(
        x_train, y_train, validation_data=(x_val, y_val), batch_size=args.batch_size,
        verbose=args.verbose if args.verbose == "auto" else int(args.verbose), **fit_kwargs,
    )
    if role == "worker":
        print(f"Tuner {tuner.tuner_id}: no trials left; the chief writes the results to {out}.")
        return 0
    best = tuner.get_best_models(1)[0]
    accuracies = task_accuracies(best, data.x_test, data.y_test)
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
    _print_accuracies(f"Best model on the {args.dataset} test split ({len(data.x_test)} images):", accuracies)
    print(f"Search folder: {out}\nSavedModel: {path}")
    return 0


def main(argv=None):
    args = _parser().parse_args(argv)
    try:
        commands = {
            "train": train, "evaluate": evaluate, "attack": attack, "robustness": robustness,
            "export": export, "tune": tune,
        }
        return commands[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError) as e:
        print(f"tf-mtvib: error: {e}", file=sys.stderr)
        return 2
