"""`tf-mtvib` / `python -m tf_mtvib`: train, evaluate and attack the paper's systems.

One module per command (`train`, `evaluate`, `attack`, `robustness`,
`export`, `tune`), each with `add_parser(subparsers)` and `run(args)`, over
`run_folder.RunFolder` (a run's files, resume and atomic writes) and the model
family adapters of `families`, so that no command asks which family a run
belongs to. Commands raise `errors.CommandError` for bad input; `main` prints
it, and the library's ValueError / OSError, as `tf-mtvib: <message>` and
returns 2. TensorFlow is imported inside the commands, after `_env` has set
its process options and, for `--strategy multiworker`, after the strategy.
"""

from tf_mtvib import _env  # noqa: F401, I001  (before TensorFlow)

import argparse
import sys

from tf_mtvib.cli import attack, evaluate, export, robustness, train, tune
from tf_mtvib.cli.errors import CommandError

DESCRIPTION = "`tf-mtvib` / `python -m tf_mtvib`: train, evaluate and attack the paper's systems."
# In the order `tf-mtvib --help` lists them.
COMMANDS = {"train": train, "export": export, "tune": tune, "attack": attack, "robustness": robustness,
            "evaluate": evaluate}


def build_parser():
    parser = argparse.ArgumentParser(prog="tf-mtvib", description=DESCRIPTION)
    subparsers = parser.add_subparsers(dest="command", required=True)
    for command in COMMANDS.values():
        command.add_parser(subparsers)
    return parser


def main(argv=None):
    """Runs the command of `argv` (default sys.argv[1:]) and returns its exit status."""
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as stop:  # --help, or a usage error argparse has already printed
        return stop.code
    try:
        return COMMANDS[args.command].run(args)
    except (CommandError, ValueError, OSError) as error:  # OSError: also FileNotFoundError, PIL's unreadable image
        print(f"tf-mtvib: {error}", file=sys.stderr)
        return 2
