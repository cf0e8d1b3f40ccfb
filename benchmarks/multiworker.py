"""Training throughput of MTVIB (Table I) with model.fit: two
MultiWorkerMirroredStrategy workers on 127.0.0.1 against one process, on the
same machine, same global batch and data.

On one machine the two workers share its cores, so no speed-up is expected:
the ratio shows what the collective all-reduce and the second process cost.
Images/s counts the global batch over the epochs after the first (which
traces the graph).

    python benchmarks/multiworker.py --num-train 2000 --batch-size 100 --epochs 3
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(args):
    # First, so that TensorFlow loads with the package's oneDNN setting (tf_mtvib/_env.py).
    import tf_mtvib as tm

    # isort: split
    import keras

    from tf_mtvib import distribute
    from tf_mtvib.data.pipeline import load_task_data, make_dataset

    strategy = distribute.get_strategy("multiworker" if "TF_CONFIG" in os.environ else "default")  # first
    data = load_task_data("sample", num_train=args.num_train)
    with strategy.scope():
        model = tm.build_mtvib(data.tasks, seed=0)
        model.compile(optimizer=keras.optimizers.Adam(1e-4))
    dataset = distribute.shard_by_data(make_dataset(data.x_train, data.y_train, args.batch_size, shuffle=True, seed=0))
    seconds = []

    class EpochTimer(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.start = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            seconds.append(time.perf_counter() - self.start)

    model.fit(dataset, epochs=args.epochs, callbacks=[EpochTimer()], verbose=0)
    print(json.dumps({"epoch_seconds": seconds, "fingerprint": distribute.weights_fingerprint(model)}))


def run(argv, tf_configs, timeout):
    processes = []
    for tf_config in tf_configs:
        env = {**os.environ, "PYTHONPATH": REPO, "TF_CPP_MIN_LOG_LEVEL": "2"}
        env.pop("TF_CONFIG", None)
        if tf_config:
            env["TF_CONFIG"] = json.dumps(tf_config)
        processes.append(subprocess.Popen([sys.executable, __file__, "--worker", *argv], env=env,
                                          stdout=subprocess.PIPE, text=True))
    try:
        outputs = [p.communicate(timeout=timeout)[0] for p in processes]
    finally:
        for p in processes:
            if p.poll() is None:
                p.kill()
    if any(p.returncode for p in processes):
        raise SystemExit(f"a worker failed: return codes {[p.returncode for p in processes]}")
    return [json.loads(out.strip().splitlines()[-1]) for out in outputs]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--num-train", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=100, help="global batch")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    argv = ["--num-train", str(args.num_train), "--batch-size", str(args.batch_size), "--epochs", str(args.epochs)]
    single = run(argv, [None], args.timeout)[0]
    sockets = [socket.socket() for _ in range(2)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    workers = run(argv, [{"cluster": cluster, "task": {"type": "worker", "index": i}} for i in range(2)], args.timeout)

    def images_per_second(result):
        later = result["epoch_seconds"][1:]
        return args.num_train * len(later) / sum(later)

    one, two = images_per_second(single), images_per_second(workers[0])
    print(f"{'setup':<28s} {'images/s':>9s}")
    print(f"{'1 process':<28s} {one:9.1f}")
    print(f"{'2 workers on 127.0.0.1':<28s} {two:9.1f}")
    print(f"ratio 2 workers / 1 process: {two / one:.2f}; workers' weights agree: "
          f"{workers[0]['fingerprint'] == workers[1]['fingerprint']}")


if __name__ == "__main__":
    main()
