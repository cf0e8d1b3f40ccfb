"""What every model family adapter shares."""

import collections
import os
from typing import ClassVar

from tf_mtvib.cli.errors import CommandError

# What `tf-mtvib evaluate` prints and where it writes it (a file in the run folder).
Evaluation = collections.namedtuple("Evaluation", "title accuracies file_name record")


class ModelFamily:
    """One family of models as the commands see it: the systems it trains,
    the data sets they train on, the defaults of the flags left out, what a
    run records, and how its models are built, trained, evaluated and
    attacked. Commands call these methods and never ask which family it is.

    Subclasses set the class attributes and implement the methods that raise
    NotImplementedError here.
    """

    models = ()
    datasets = ()
    # `train` flags left out (None) take these: settings under which every system of the family trains well.
    defaults: ClassVar[dict] = {}
    # Least seconds between two epoch checkpoints (the last epoch is always saved).
    checkpoint_interval = 0.0

    # --- train: arguments and config ---------------------------------------------------

    def fill_defaults(self, args):
        for name, value in self.defaults.items():
            if getattr(args, name) is None:
                setattr(args, name, value)

    def check_model(self, model):
        if model not in self.models:
            raise CommandError(self.unknown_model_message(model))

    def unknown_model_message(self, model):
        raise NotImplementedError

    def check_train_args(self, args):
        """Refuses flags this family cannot use or values outside their range."""
        self.check_model(args.model)

    def recorded_settings(self, args):
        """Names of the settings config.json records: what makes the run, so a
        resumed run must have the same ones."""
        raise NotImplementedError

    def run_config(self, args):
        config = {name: getattr(args, name) for name in self.recorded_settings(args)}
        config["data_dir"] = args.data_dir and os.path.abspath(args.data_dir)
        return config

    # --- train: data and model ------------------------------------------------------------

    def load_data(self, config):
        raise NotImplementedError

    def check_data(self, args, data):
        """Refuses flags that name something `data` lacks."""

    def build(self, args, data, **parts):
        """The uncompiled model of `args` for `data`."""
        raise NotImplementedError

    def unscoped_parts(self, args):
        """Keyword arguments of `build` that must be made outside the strategy's scope."""
        return {}

    def model_builder(self, args, data):
        """A function that builds and compiles the model; call it under the
        strategy's scope (`RunFolder.restore_or_build`). What `unscoped_parts`
        returns is made now, outside that scope."""
        parts = self.unscoped_parts(args)

        def build_compiled():
            import keras

            model = self.build(args, data, **parts)
            model.compile(optimizer=keras.optimizers.Adam(args.lr))
            return model

        return build_compiled

    # --- train: fit ---------------------------------------------------------------------

    def training_dataset(self, args, data):
        raise NotImplementedError

    def validation_dataset(self, data):
        """What `fit` validates on after each epoch, or None."""

    def callbacks(self, args):
        """Callbacks besides the shared ones (divergence stop, TensorBoard, checkpoint)."""
        return []

    def batch_description(self, args):
        raise NotImplementedError

    def data_sizes(self, data):
        """The example counts metrics.json records."""
        raise NotImplementedError

    def train_title(self, args, data):
        raise NotImplementedError

    # --- evaluate, attack, robustness ----------------------------------------------------

    def evaluate(self, model, data, batch_size=500):
        """Clean test accuracies, per task and combined."""
        raise NotImplementedError

    def evaluation(self, model, config, data, args):
        """The `Evaluation` of `tf-mtvib evaluate` with `args`' flags."""
        raise NotImplementedError

    @staticmethod
    def test_split_title(config, mode=None):
        title = f"{config['model']} on {config['dataset']} test split"
        return f"{title} ({mode}):" if mode else f"{title}:"

    def check_attack(self, model, config, args):
        """Refuses `tf-mtvib attack` flags (or the command) before any data is read."""
        raise NotImplementedError

    def attack(self, model, data, args):
        """`(title, accuracies)` under `args.attack`."""
        raise NotImplementedError

    def check_robustness(self, model, config, args):
        """Refuses `tf-mtvib robustness` flags before any data is read."""

    def robustness(self, model, config, data, args):
        """`(rows, extra files)` of `tf-mtvib robustness`: the sweep's rows and
        `{file name: JSON payload}` written beside its table."""
        raise NotImplementedError

    def sweep_row_scope(self, row):
        """The words between the attack and eps on a printed sweep row."""
        return ""
