"""Clean test accuracy of STL, STVIB, GS, UWL and MTVIB (MTVIB Tables III-IV, eta = 0).

Trains each system on full MultiMNIST / MultiFashion (120,000 / 10,000) with
the paper's settings (Adam 1e-4, batch 200, latent 256, beta 1e-3) for
--epochs epochs (the paper trains 200), then writes one JSON per run and a
Markdown table beside the paper's numbers; the trained models are kept
under <out>/models/ for the robustness benchmarks. Finished runs are skipped, so an
interrupted benchmark continues where it stopped.

    python benchmarks/clean_accuracy.py --epochs 2 --data-dir ../shared/data

With --min-gain a run trains until every task's test accuracy gains less than
--min-gain points per epoch, averaged over the last --window epochs, or until
--epochs (MTVIB issue 10, item 4); it scores all test images after each epoch,
keeps the models of the --snapshots epochs and of the last one, and resumes a
killed run from its last finished epoch (keras BackupAndRestore):

    python benchmarks/clean_accuracy.py --datasets multifashion --systems mtvib uwl --epochs 30 \
        --min-gain 0.2 --snapshots 2 10 --data-dir ../shared/data --out benchmarks/out/converged
"""

import argparse
import json
import os
import platform
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import tf_mtvib  # noqa: E402,F401  (first: turns TensorFlow's oneDNN kernels on before keras loads it)

# isort: split
import keras  # noqa: E402
from paper_tables import TABLES  # noqa: E402

from tf_mtvib.data import atomic  # noqa: E402
from tf_mtvib.data.pipeline import load_task_data, make_dataset  # noqa: E402
from tf_mtvib.evaluation import task_accuracies  # noqa: E402
from tf_mtvib.models import SYSTEMS, build_model  # noqa: E402


class ConvergenceStop(keras.callbacks.Callback):
    """Stops when every task's test accuracy gains less than `min_gain` points
    per epoch over the last `window` epochs, and keeps the per-epoch test
    accuracies in `log_path` (JSON), so a resumed run sees the epochs before it.

    Also saves the model after each epoch listed in `snapshots` as
    `snapshot_pattern.format(epoch=...)`. (keras' EarlyStopping watches one
    metric's best value with a patience; this rule is a mean gain per epoch
    over a window, required of every task.)
    """

    def __init__(self, log_path, min_gain, window, snapshots=(), snapshot_pattern=None):
        super().__init__()
        self.log_path, self.min_gain, self.window = log_path, min_gain, window
        self.snapshots, self.snapshot_pattern = set(snapshots), snapshot_pattern
        self.epochs = {}
        self.epoch_start = None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch_start = time.time()

    def on_train_begin(self, logs=None):
        if os.path.exists(self.log_path):
            with open(self.log_path) as f:
                self.epochs = {int(k): v for k, v in json.load(f).items()}

    def on_epoch_end(self, epoch, logs=None):
        done = epoch + 1
        self.epochs[done] = {
            k[len("val_"):]: float(v) for k, v in logs.items() if k.startswith("val_") and k.endswith("accuracy")
        }
        self.epochs[done]["seconds"] = time.time() - self.epoch_start  # training and scoring
        self.epochs = {e: v for e, v in self.epochs.items() if e <= done}  # a resumed run may redo an epoch
        atomic.write_json(self.log_path, {str(e): v for e, v in sorted(self.epochs.items())})
        if done in self.snapshots and self.snapshot_pattern:
            with atomic.atomic_path(self.snapshot_pattern.format(epoch=done), suffix=".keras") as tmp:
                self.model.save(tmp)
        if self.converged(done):
            print(f"converged after epoch {done}: every task gained < {self.min_gain} points/epoch", flush=True)
            self.model.stop_training = True

    def gains(self, done):
        """Points per epoch each task gained over the last `window` epochs (None before enough epochs)."""
        if done - self.window not in self.epochs or done not in self.epochs:
            return None
        now, before = self.epochs[done], self.epochs[done - self.window]
        tasks = [k for k in now if k in before and k not in ("joint_accuracy", "seconds")]
        return {k: 100 * (now[k] - before[k]) / self.window for k in tasks}

    def converged(self, done):
        gains = self.gains(done)
        return bool(gains) and all(g < self.min_gain for g in gains.values())


def run_one(dataset, system, args, model_path):
    data = load_task_data(dataset, data_dir=args.data_dir, cache_dir=args.cache_dir, num_train=args.num_train, seed=0)
    keras.utils.set_random_seed(args.seed)
    model = build_model(system, data.tasks, input_shape=data.input_shape, seed=args.seed)
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    train = make_dataset(data.x_train, data.y_train, args.batch_size, shuffle=True, seed=args.seed)
    # Per-epoch accuracy on the first --track-test test images, to see where training flattens.
    tracked = (
        (data.x_test[: args.track_test], {k: v[: args.track_test] for k, v in data.y_test.items()})
        if args.track_test
        else None
    )
    callbacks, stop = [], None
    if args.min_gain is not None:
        # Every test image is scored each epoch: the stopping rule needs gains of 0.2 points to stand out.
        tracked = (data.x_test, data.y_test)
        run_name = os.path.basename(model_path)[: -len(".keras")]
        stop = ConvergenceStop(
            os.path.join(args.out, f"{run_name}-epochs.json"), args.min_gain, args.window, args.snapshots,
            os.path.join(args.out, "models", f"{run_name}-epoch{{epoch}}.keras"),
        )
        # BackupAndRestore first, so a resumed run restores the weights before the log is extended.
        callbacks = [keras.callbacks.BackupAndRestore(os.path.join(args.out, "backup", run_name)), stop]
    start = time.time()
    history = model.fit(train, epochs=args.epochs, verbose=2, validation_data=tracked, callbacks=callbacks)
    seconds = time.time() - start
    with atomic.atomic_path(model_path, suffix=".keras") as tmp:
        model.save(tmp)  # reused by the robustness benchmarks
    return {
        "model_path": os.path.relpath(model_path, os.path.dirname(os.path.abspath(__file__))),
        "dataset": dataset,
        "system": system,
        "epochs": args.epochs,
        "train_examples": int(len(data.x_train)),
        "test_examples": int(len(data.x_test)),
        "train_seconds": seconds,
        "images_per_second": len(history.epoch) * len(data.x_train) / seconds,
        "test_accuracy": task_accuracies(model, data.x_test, data.y_test),
        "final_train_loss": float(history.history["loss"][-1]),
        "tracked_test_accuracy": {
            k: v for k, v in history.history.items() if k.startswith("val_") and k.endswith("accuracy")
        },
        "epochs_trained": max(stop.epochs) if stop else args.epochs,
        "per_epoch_test_accuracy": stop.epochs if stop else None,
        "converged": stop.converged(max(stop.epochs)) if stop else None,
        "seconds_note": "train_seconds covers the last process only when the run was resumed" if stop else None,
        "machine": f"{platform.machine()} {os.cpu_count()} CPUs",
    }


def table(results):
    lines = []
    for dataset in TABLES:
        rows = [r for r in results if r["dataset"] == dataset]
        if not rows:
            continue
        lines += [
            f"### {dataset} (clean test accuracy, %; ours after {rows[0]['epochs']} epoch(s), paper after 200)",
            "",
            "| system | top-left ours | top-left paper | bottom-right ours | bottom-right paper "
            "| joint ours | train time (s) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for system in SYSTEMS:
            r = next((r for r in rows if r["system"] == system), None)
            if r is None:
                continue
            acc, paper = r["test_accuracy"], TABLES[dataset][system]
            lines.append(
                f"| {system.upper()} | {100 * acc['top_left']:.1f} | {paper['top_left'][0]:.1f} | "
                f"{100 * acc['bottom_right']:.1f} | {paper['bottom_right'][0]:.1f} | {100 * acc['joint']:.1f} | "
                f"{r['train_seconds']:.0f} |"
            )
        lines.append("")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["multimnist", "multifashion"])
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS))
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=200)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num-train", type=int, default=None)
    parser.add_argument("--track-test", type=int, default=0, help="test images scored after every epoch (0: none)")
    parser.add_argument("--min-gain", type=float, default=None,
                        help="stop when every task gains fewer points per epoch than this (--epochs is the cap)")
    parser.add_argument("--window", type=int, default=3, help="epochs the --min-gain rule averages over")
    parser.add_argument("--snapshots", type=int, nargs="*", default=(2, 10), help="epochs whose models are kept")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "clean_accuracy"))
    args = parser.parse_args()
    if args.window < 1:
        parser.error(f"--window must be a positive number of epochs, received {args.window}")
    results = []
    for dataset in args.datasets:
        for system in args.systems:
            path = os.path.join(args.out, f"{dataset}-{system}-e{args.epochs}.json")
            if not os.path.exists(path):
                print(f"== {dataset} {system}", flush=True)
                model_path = os.path.join(args.out, "models", f"{dataset}-{system}-e{args.epochs}.keras")
                atomic.write_json(path, run_one(dataset, system, args, model_path))
            with open(path) as f:
                results.append(json.load(f))
            with atomic.atomic_path(os.path.join(args.out, f"table-e{args.epochs}.md")) as tmp:
                with open(tmp, "w") as f:
                    f.write(table(results))
    print(table(results))


if __name__ == "__main__":
    main()
