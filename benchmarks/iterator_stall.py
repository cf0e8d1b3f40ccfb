"""Stalls when tf.data iterators are deleted, with and without autotuning (issue 14).

Times, in one process and interleaved, the Keras paths that build their own
autotuned tf.data pipeline from arrays against the package's paths, whose
pipelines have autotuning off (`tf_mtvib.data.pipeline.without_autotune`):
- `predict` on --num-images random images, batch 1,000: `keras.Model.predict`
  (Keras' array pipeline) against `model.predict`;
- `evaluate`, the same way;
- `fit` for --epochs epochs of a finite data set (--fit-images, batch 200):
  the earlier `make_dataset` (`prefetch(AUTOTUNE)`, autotuning on) against
  today's; the first step of every epoch is where a stall shows.
MTVIB of Table I, untrained (speed does not depend on the weights).

    python benchmarks/iterator_stall.py --calls 10
"""

import argparse
import json
import os
import time

import tf_mtvib as tm  # first: turns TensorFlow's oneDNN kernels on before keras loads it

# isort: split
import keras
import numpy as np
import tensorflow as tf
from speed import cpu_info  # benchmarks/speed.py, beside this script

from tf_mtvib.data.pipeline import make_dataset


def autotuned_dataset(x, y, batch_size):
    """`make_dataset` as it was before autotuning was turned off."""
    return tf.data.Dataset.from_tensor_slices((x, dict(y))).batch(batch_size).prefetch(tf.data.AUTOTUNE)


def seconds(call):
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def fit_epochs(model, dataset, epochs):
    """Per epoch: (seconds of its first step, median seconds of the others)."""
    stamps = []
    timer = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: stamps.append([time.perf_counter()]),
        on_train_batch_end=lambda batch, logs: stamps[-1].append(time.perf_counter()),
    )
    model.fit(dataset, epochs=epochs, verbose=0, callbacks=[timer])
    steps = [np.diff(s) for s in stamps]
    return [(float(d[0]), float(np.median(d[1:]))) for d in steps]


def summary(values):
    values = np.asarray(values)
    return {"median": float(np.median(values)), "min": float(values.min()), "max": float(values.max()),
            "calls": [round(float(v), 3) for v in values]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=10, help="timed calls of each predict / evaluate path")
    parser.add_argument("--num-images", type=int, default=10000)
    parser.add_argument("--fit-images", type=int, default=4000)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "iterator_stall.json"))
    args = parser.parse_args()

    model = tm.build_mtvib(tm.multi_digit_tasks(), seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    rng = np.random.default_rng(0)
    x = rng.random((args.num_images, 36, 36, 1), dtype=np.float32)
    y = {t: rng.integers(0, 10, args.num_images) for t in ("top_left", "bottom_right")}
    paths = {
        "predict, Keras array pipeline": lambda: keras.Model.predict(model, x, batch_size=1000, verbose=0),
        "predict, tf_mtvib": lambda: model.predict(x, batch_size=1000, verbose=0),
        "evaluate, Keras array pipeline": lambda: keras.Model.evaluate(model, x, y, batch_size=1000, verbose=0),
        "evaluate, tf_mtvib": lambda: model.evaluate(x, y, batch_size=1000, verbose=0),
    }
    for call in paths.values():
        call()  # traces
    timings = {name: [] for name in paths}
    for _ in range(args.calls):
        for name, call in paths.items():
            timings[name].append(seconds(call))
    result = {"machine": cpu_info(),
              "load_average_before": os.getloadavg(), "calls": {k: summary(v) for k, v in timings.items()}}

    fit_x, fit_y = x[: args.fit_images], {k: v[: args.fit_images] for k, v in y.items()}
    fits = {}
    for name, dataset in (("fit, autotuned pipeline", autotuned_dataset(fit_x, fit_y, 200)),
                          ("fit, tf_mtvib make_dataset", make_dataset(fit_x, fit_y, 200))):
        epochs = fit_epochs(model, dataset, args.epochs)[1:]  # the first epoch traces
        fits[name] = {"first_step": summary([e[0] for e in epochs]), "other_steps": summary([e[1] for e in epochs])}
    result["fit"] = fits

    for name, s in result["calls"].items():
        print(f"{name:34s} s per call: median {s['median']:.2f}, min {s['min']:.2f}, max {s['max']:.2f}  {s['calls']}")
    for name, s in fits.items():
        print(f"{name:34s} first step of an epoch s: median {s['first_step']['median']:.2f}, "
              f"max {s['first_step']['max']:.2f} {s['first_step']['calls']}; other steps median "
              f"{s['other_steps']['median']:.2f}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
