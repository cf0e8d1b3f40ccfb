"""The folder of one `tf-mtvib train` run, the same for every model family."""

import contextlib
import os

from tf_mtvib.cli.errors import CommandError

RESTART = "pass --overwrite to start the run again"


class RunFolder:
    """`config.json`, `metrics.json`, `model.keras`, `checkpoint/` and `logs/`
    of one run.

    Training goes `refuse_finished`, `check_resumable`, `restore_or_build`,
    `begin`, then `save`; from `begin` on, files go to `write_path`: the folder
    itself on the chief, a temporary folder on every other worker, so that
    workers never overwrite the chief's files. `load` reads a finished run
    for the other commands. Every file is written to a temporary name and
    renamed, so an interruption never leaves half a file.
    """

    def __init__(self, path, overwrite=False):
        self.path = path
        self.overwrite = overwrite
        self.write_path = path
        self.config_path = os.path.join(path, "config.json")
        self.model_path = os.path.join(path, "model.keras")
        self.checkpoint_dir = os.path.join(path, "checkpoint")

    # --- training ---------------------------------------------------------------

    def refuse_finished(self):
        if os.path.exists(self.model_path) and not self.overwrite:
            raise CommandError(f"{self.path} already holds a trained model; pass --overwrite or another --out.")

    def check_resumable(self, config):
        """Refuses to continue an interrupted run under other settings than
        `config`; only `epochs` may grow. A continued run keeps the data
        sources it began with, so that `load_data` refuses other files."""
        if not (os.path.exists(os.path.join(self.checkpoint_dir, "state.json")) and os.path.isfile(self.config_path)):
            return
        from tf_mtvib.data.atomic import read_json

        previous = read_json(self.config_path, RESTART)
        changed = {k for k in config if k != "epochs" and previous.get(k) != config[k]}
        if changed and not self.overwrite:
            raise CommandError(
                f"{self.path} holds an interrupted run with other settings ({', '.join(sorted(changed))}); "
                "pass --overwrite to start again or another --out."
            )
        if not self.overwrite and previous.get("data_sources"):
            config["data_sources"] = previous["data_sources"]

    def restore_or_build(self, strategy, build):
        """`(model, state)` from the checkpoint, or from `build()` with state
        epoch 0 when there is none or --overwrite; both under `strategy`'s scope."""
        from tf_mtvib.training import EpochCheckpoint

        with strategy.scope():
            if not self.overwrite:
                model, state = EpochCheckpoint.restore(self.checkpoint_dir, RESTART)
                if model is not None:
                    return model, state
            return build(), {"epoch": 0, "history": {}}

    def begin(self, config, strategy, restored_epoch):
        """Checks that every worker continues from the same epoch (a worker
        that did not would wait on the others for ever), says when the run
        continues, and writes config.json."""
        from tf_mtvib import distribute
        from tf_mtvib.data import atomic

        distribute.check_same_on_all_workers(
            strategy, restored_epoch,
            f"the epoch restored from {self.checkpoint_dir} (--out must be a folder every worker reads)",
        )
        if restored_epoch:
            print(f"Resuming {self.path} after epoch {restored_epoch}.")
        self.write_path = distribute.write_folder(self.path, strategy)
        os.makedirs(self.write_path, exist_ok=True)
        atomic.write_json(os.path.join(self.write_path, "config.json"), config)

    def checkpoint_callback(self, history, min_interval):
        from tf_mtvib.training import EpochCheckpoint

        return EpochCheckpoint(os.path.join(self.write_path, "checkpoint"), history=history, min_interval=min_interval)

    @property
    def logs_dir(self):
        return os.path.join(self.write_path, "logs")

    @contextlib.contextmanager
    def stop_if_diverged(self):
        """Turns `TrainingDiverged` into a `CommandError` that says which checkpoint is kept."""
        from tf_mtvib.training import TrainingDiverged

        try:
            yield
        except TrainingDiverged as error:
            raise CommandError(
                f"{str(error).rstrip('.')}. No model or metrics were written; {self._kept_checkpoint()}. "
                "Pass --overwrite to start again with other settings."
            ) from None

    def _kept_checkpoint(self):
        state = os.path.join(self.checkpoint_dir, "state.json")
        if not os.path.isfile(state):
            return "no epoch finished, so no checkpoint was kept"
        from tf_mtvib.data.atomic import read_json

        try:
            epoch = read_json(state, "").get("epoch")
        except ValueError:
            return f"the checkpoint in {self.checkpoint_dir} is damaged"
        return f"the last good checkpoint (after epoch {epoch}) stays in {self.checkpoint_dir}"

    def save(self, model, metrics):
        from tf_mtvib.data import atomic

        with atomic.atomic_path(os.path.join(self.write_path, "model.keras"), suffix=".keras") as tmp:
            model.save(tmp)
        atomic.write_json(os.path.join(self.write_path, "metrics.json"), metrics)

    # --- finished runs ------------------------------------------------------------

    def load(self):
        """`(model, config)` of the finished run; refuses damaged files, models
        that tf-mtvib did not build and models with NaN / Inf weights."""
        for path in (self.model_path, self.config_path):
            if not os.path.isfile(path):
                raise CommandError(f"{self.path} is not a finished run: {path} is missing.")
        from tf_mtvib.data.atomic import read_json
        from tf_mtvib.data.validation import check_finite_weights
        from tf_mtvib.training.callbacks import load_model_file

        remedy = f"train the run again (`tf-mtvib train ... --out {self.path} --overwrite`)"
        config = read_json(self.config_path, remedy)
        model = load_model_file(self.model_path, remedy)
        if getattr(model, "task_indexed", None) is None:
            raise CommandError(
                f"{self.model_path} holds a {type(model).__name__} model {model.name!r}, not one that tf-mtvib "
                "built (MultiTaskVIB or a VMTL-family model); tf-mtvib commands read only run folders written by "
                "`tf-mtvib train`."
            )
        check_finite_weights(model, self.model_path)
        return model, config

    def write_json(self, name, payload):
        """Writes a command's result (e.g. eval.json) beside the run's files."""
        from tf_mtvib.data import atomic

        atomic.write_json(os.path.join(self.path, name), payload)

    @staticmethod
    def load_data(family, config):
        """`family.load_data(config)`; when `config` records the SHA-256 of its
        source files (a run's config.json), only if the files found now have them."""
        data = family.load_data(config)
        recorded = config.get("data_sources")
        if recorded is None:
            return data
        found = {name: source["sha256"] for name, source in data.sources.items()}
        differing = sorted(
            n for n in found.keys() | recorded.keys() if recorded.get(n, {}).get("sha256") != found.get(n)
        )
        if differing:
            where = "; ".join(
                f"{n}: the run used {recorded.get(n, {}).get('folder')}, found {data.sources.get(n, {}).get('folder')}"
                for n in differing
            )
            raise CommandError(
                f"The run was made from other files than those found now (their SHA-256 differ from config.json's "
                f"'data_sources'): {where}. Pass --data-dir (or set TF_MTVIB_DATA) to the run's folder."
            )
        return data
