"""Flag checks and the flags that several commands share."""

from tf_mtvib.cli.errors import CommandError

VERBOSITIES = ("auto", "0", "1", "2")


def flag(dest):
    """The command-line spelling of an argparse destination: `batch_size` -> `--batch-size`."""
    return "--" + dest.replace("_", "-")


def require_positive(args, *names):
    """Refuses any of the flags `names` given as 0 or less (None is "not given" and passes)."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value <= 0:
            raise CommandError(f"{flag(name)} must be positive, received {value}.")


def require_non_negative(args, *names):
    """Refuses any of the flags `names` given below 0."""
    for name in names:
        value = getattr(args, name)
        if value is not None and value < 0:
            raise CommandError(f"{flag(name)} must be >= 0, received {value}.")


def require_in_unit_interval(args, name, meaning):
    """Refuses a flag outside (0, 1]; `meaning` says why that range."""
    value = getattr(args, name)
    if not 0 < value <= 1:
        raise CommandError(f"{flag(name)} must lie in (0, 1] ({meaning}), received {value}.")


def verbosity(args):
    """Keras' `verbose` from `--verbose`: 'auto' or the int 0, 1 or 2."""
    if args.verbose not in VERBOSITIES:
        raise CommandError(f"--verbose must be one of {', '.join(VERBOSITIES)}, received {args.verbose!r}.")
    return args.verbose if args.verbose == "auto" else int(args.verbose)


def add_device_flags(parser):
    parser.add_argument("--strategy", choices=("auto", "default", "mirrored", "multiworker"), default="default",
                        help="tf.distribute strategy; --batch-size is the global batch")
    parser.add_argument("--precision", choices=("float32", "bfloat16", "float16"), default=None,
                        help="compute dtype (variables, logits and KL stay float32): bfloat16 for CPUs with "
                             "AVX512_BF16 / AMX, float16 for GPUs with tensor cores; default float32")
    parser.add_argument("--mixed-precision", action="store_true", help="the same as --precision float16")


def device_setup(args):
    """The strategy of `--strategy`, after `--precision` / `--mixed-precision`. Call it before
    any other TensorFlow op: a multi-worker strategy cannot be made after one."""
    from tf_mtvib import distribute

    precision = args.precision
    if args.mixed_precision:
        if precision not in (None, "float16"):
            raise CommandError(f"--mixed-precision means --precision float16; it contradicts --precision {precision}.")
        precision = "float16"
    distribute.set_precision(precision or "float32")
    return distribute.get_strategy(args.strategy)
