"""Attack speed per trace, and which pooling-gradient kernel each trace runs (issue 14).

Traces FGSM and PGD-10 (both tasks, eps 0.1, batch 500, MTVIB of Table I,
untrained: speed does not depend on the weights) --traces times, each trace
in a fresh `AttackCache`, and times --calls calls of every trace. With
--profile it also records one call of every trace with TensorFlow's profiler
and reports the milliseconds per pooling-gradient kernel: Eigen's
`MaxPoolGrad` or oneDNN's `_MklNativeMaxPoolGrad`. Inlined into the attack's
while-loop body, the gradient pass often ran the Eigen kernel, and such
traces were the slow ones.

    python benchmarks/attack_traces.py --traces 3 --profile

Run it with PYTHONPATH set to another checkout to measure that code instead.
"""

import argparse
import collections
import glob
import json
import os
import tempfile
import time

import tf_mtvib as tm  # first: turns TensorFlow's oneDNN kernels on before keras loads it

# isort: split
import numpy as np
import tensorflow as tf
from speed import FGSM_THROUGHPUT, PGD_THROUGHPUT, cpu_info  # benchmarks/speed.py, beside this script
from tensorflow.tsl.profiler.protobuf import xplane_pb2

from tf_mtvib import attacks


def pool_gradient_milliseconds(attack, cache):
    """Milliseconds per op type of the max-pooling gradients in one profiled `attack(cache)`."""
    with tempfile.TemporaryDirectory() as logdir:
        tf.profiler.experimental.start(logdir)
        attack(cache).numpy()
        tf.profiler.experimental.stop()
        (path,) = glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True)
        space = xplane_pb2.XSpace()
        with open(path, "rb") as f:
            space.ParseFromString(f.read())
    spent = collections.Counter()
    for plane in space.planes:
        for line in plane.lines:
            for event in line.events:
                # Op events are named "<node name>:<op type>".
                op_type = plane.event_metadata[event.metadata_id].name.rpartition(":")[2]
                if "MaxPoolGrad" in op_type:
                    spent[op_type] += event.duration_ps / 1e9
    return {k: round(v, 1) for k, v in spent.items()}


def positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, received {text!r}")
    return value


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--traces", type=positive_int, default=3)
    parser.add_argument("--calls", type=positive_int, default=3)
    parser.add_argument("--batch", type=positive_int, default=500)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", default=None, help="JSON file for the results")
    args = parser.parse_args()

    tasks = tm.multi_digit_tasks()
    model = tm.build_mtvib(tasks, seed=0)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.random((args.batch, 36, 36, 1), dtype=np.float32))
    y = {t.name: rng.integers(0, 10, args.batch) for t in tasks}
    attack_calls = {
        "fgsm": lambda cache: attacks.fast_gradient_method(model, x, y=y, cache=cache, **FGSM_THROUGHPUT),
        "pgd10": lambda cache: attacks.projected_gradient_descent(
            model, x, y=y, seed=0, cache=cache, **PGD_THROUGHPUT
        ),
    }
    results = {"cpu": cpu_info(), "package": os.path.dirname(tm.__file__), "batch": args.batch, "traces": {}}
    for trace in range(args.traces):
        for name, attack in attack_calls.items():
            cache = attacks.AttackCache()
            attack(cache).numpy()  # traces
            seconds = []
            for _ in range(args.calls):
                start = time.perf_counter()
                attack(cache).numpy()
                seconds.append(time.perf_counter() - start)
            entry = {"images_per_s": round(args.batch / float(np.median(seconds))),
                     "seconds": [round(s, 3) for s in seconds]}
            if args.profile:
                entry["pool_gradient_ms"] = pool_gradient_milliseconds(attack, cache)
            results["traces"].setdefault(name, []).append(entry)
            print(f"{name} trace {trace}: {entry}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
