"""`tf-mtvib train`: train a model, evaluate it on the test split, write its run folder."""

import os
import time

from tf_mtvib.cli import families
from tf_mtvib.cli.arguments import add_device_flags, device_setup, flag, require_positive, verbosity
from tf_mtvib.cli.errors import CommandError
from tf_mtvib.cli.report import print_accuracies, print_run_folder
from tf_mtvib.cli.run_folder import RunFolder

# The --adv-* flags' defaults. The parser leaves them None ("not given"), so
# that they can be refused without --adversarial, where they would do nothing.
ADVERSARIAL_DEFAULTS = {"adv_eps": 0.1, "adv_steps": 7, "adv_fraction": 1.0, "adv_tasks": None}


def add_parser(subparsers):
    mtvib, vmtl = families.MTVIB.defaults, families.VMTL.defaults
    train = subparsers.add_parser("train", help="train a model and evaluate it on the test split")
    train.add_argument("--model", default=None,
                       choices=families.MTVIB.models + tuple(m for m in families.VMTL.models
                                                             if m not in families.MTVIB.models),
                       help=f"MTVIB-paper systems (default {mtvib['model']}), or with --dataset domains the "
                            f"VMTL-paper systems (default {vmtl['model']})")
    train.add_argument("--dataset", default="sample", choices=families.DATASETS)
    train.add_argument("--data-dir", default=None,
                       help="folder with the IDX files (or the MTFL folder); default $TF_MTVIB_DATA")
    train.add_argument("--cache-dir", default=None, help="where generated data sets are cached")
    train.add_argument("--num-train", type=int, default=None, help="training examples (default: all)")
    train.add_argument("--num-test", type=int, default=None, help="test examples (default: all)")
    # None marks "not given": the run's family fills in its default (ModelFamily.defaults).
    train.add_argument("--epochs", type=int, default=None,
                       help=f"default {mtvib['epochs']}, or {vmtl['epochs']} with --dataset domains")
    train.add_argument("--batch-size", type=int, default=None)
    train.add_argument("--latent-dim", type=int, default=None,
                       help=f"default {mtvib['latent_dim']}, or {vmtl['latent_dim']} with --dataset domains")
    train.add_argument("--beta", type=float, default=None)
    train.add_argument("--lr", type=float, default=None,
                       help=f"Adam's learning rate; default {mtvib['lr']}, or {vmtl['lr']} with --dataset domains")
    train.add_argument("--task-weights", type=float, nargs="+", default=None, help="fixed task weights for --model gs")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--out", default=None, help="run folder (default runs/<model>-<dataset>)")
    train.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    train.add_argument("--verbose", default="auto", help="Keras verbosity: auto, 0, 1 or 2")
    train.add_argument("--adversarial", choices=("pgd", "fgsm"), default=None,
                       help="train on attacked batches (MTRobust 5.5)")
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
    add_device_flags(train)


def _check_adversarial_flags(args):
    given = [flag(name) for name in ADVERSARIAL_DEFAULTS if getattr(args, name) is not None]
    if given and not args.adversarial:
        raise CommandError(f"{', '.join(given)} only act(s) with --adversarial pgd|fgsm; add it or drop them.")
    for name, default in ADVERSARIAL_DEFAULTS.items():
        if getattr(args, name) is None:
            setattr(args, name, default)


def run(args):
    family = families.for_dataset(args.dataset)
    family.fill_defaults(args)
    _check_adversarial_flags(args)
    require_positive(args, "epochs", "batch_size", "latent_dim", "lr", "num_train", "num_test", "adv_eps", "adv_steps")
    family.check_train_args(args)
    verbose = verbosity(args)
    run_folder = RunFolder(args.out or os.path.join("runs", f"{args.model}-{args.dataset}"), args.overwrite)
    run_folder.refuse_finished()
    config = family.run_config(args)
    run_folder.check_resumable(config)

    strategy = device_setup(args)  # before any other TensorFlow op (multiworker needs it)
    data = run_folder.load_data(family, config)  # validated before anything is written
    config["data_sources"] = data.sources
    family.check_data(args, data)

    import keras

    from tf_mtvib import distribute
    from tf_mtvib.data.validation import check_finite_weights
    from tf_mtvib.training import StopOnNonFiniteLoss

    keras.utils.set_random_seed(args.seed)
    model, state = run_folder.restore_or_build(strategy, family.model_builder(args, data))
    run_folder.begin(config, strategy, state["epoch"])

    if strategy.num_replicas_in_sync > 1:
        print(f"Training on {strategy.num_replicas_in_sync} replicas, {family.batch_description(args)}.")
    validation = family.validation_dataset(data)
    checkpoint = run_folder.checkpoint_callback(state["history"], family.checkpoint_interval)
    # The checkpoint goes last, so that it saves the logs the other callbacks add.
    callbacks = [StopOnNonFiniteLoss(), keras.callbacks.TensorBoard(run_folder.logs_dir), *family.callbacks(args),
                 checkpoint]
    start = time.time()
    if state["epoch"] < args.epochs:
        with run_folder.stop_if_diverged():
            model.fit(
                distribute.shard_by_data(family.training_dataset(args, data)),
                epochs=args.epochs,
                initial_epoch=state["epoch"],
                validation_data=None if validation is None else distribute.shard_by_data(validation),
                callbacks=callbacks,
                verbose=verbose,
            )
    seconds = time.time() - start
    check_finite_weights(model, f"The trained {args.model} model")
    accuracies = family.evaluate(model, data)
    run_folder.save(model, {
        "test_accuracy": accuracies, "history": checkpoint.history, "train_seconds": seconds,
        "data_sources": data.sources, **family.data_sizes(data),
    })
    print_accuracies(family.train_title(args, data), accuracies)
    print_run_folder(run_folder.path, strategy, model)
    return 0
