"""The one error type of the commands."""


class CommandError(Exception):
    """A bad input or a refused action, said in one sentence that names the
    argument or file, the value and what was expected. `tf_mtvib.cli.main`
    prints it as `tf-mtvib: <message>` and returns 2, so a command never shows
    a traceback for something the user can fix."""
