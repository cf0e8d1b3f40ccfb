"""Training throughput of MTVIB (Table I) with model.fit, against the machine's ceiling.

The ceiling is the float32 matmul rate this machine reaches (best of several
2048 x 2048 products). The work of one training step per image is counted
from the layers: 2 FLOPs per multiply-add of every Conv2D / Dense forward,
times 3 for forward + backward (input and weight gradients); the small
element-wise layers are not counted. Each configuration runs in its own
process because oneDNN is chosen when TensorFlow is imported.

    python benchmarks/speed.py            # writes benchmarks/out/speed.json
"""

import argparse
import json
import os
import platform
import subprocess
import sys
import time

# The L-inf attacks whose throughput robustness.py and peer/compare.py time.
ATTACK_BATCH = 500
FGSM_THROUGHPUT = {"eps": 0.1, "clip_min": 0.0, "clip_max": 1.0}
PGD_THROUGHPUT = {**FGSM_THROUGHPUT, "eps_iter": 0.025, "nb_iter": 10}

CONFIGS = {
    "default (oneDNN on, graph)": {"onednn": "1", "jit_compile": False, "steps_per_execution": 1},
    "oneDNN off": {"onednn": "0", "jit_compile": False, "steps_per_execution": 1},
    "XLA jit_compile": {"onednn": "1", "jit_compile": True, "steps_per_execution": 1},
    "steps_per_execution=10": {"onednn": "1", "jit_compile": False, "steps_per_execution": 10},
    # Pays where the CPU has AVX512_BF16 or AMX (lscpu); elsewhere bfloat16 is emulated.
    "precision bfloat16": {"onednn": "1", "jit_compile": False, "steps_per_execution": 1, "precision": "bfloat16"},
    # The stem's batch norm through Keras' own ops, as before the package's fused layer took bfloat16 maps.
    "precision bfloat16, Keras stem BN": {"onednn": "1", "jit_compile": False, "steps_per_execution": 1,
                                          "precision": "bfloat16", "fused_low_precision_bn": False},
}


def training_flops_per_image(model):
    """3 x forward FLOPs of the Conv2D and Dense layers of one example."""
    import keras
    import numpy as np

    forward = 0
    for layer in model._flatten_layers(include_self=False, recursive=True):
        if isinstance(layer, keras.layers.Conv2D):
            out_h, out_w = layer.output.shape[1:3]
            kh, kw = layer.kernel_size
            forward += 2 * out_h * out_w * kh * kw * layer.kernel.shape[2] * layer.filters
        elif isinstance(layer, keras.layers.Dense):
            forward += 2 * int(np.prod(layer.kernel.shape))
    return 3 * forward


def cpu_info():
    """The CPU as lscpu names it, its logical CPU count, and the matmul-relevant ISA flags.

    `bfloat16` is true where the CPU has bfloat16 dot products (AVX512_BF16 or AMX).
    """
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        text = ""
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    flags = set(fields.get("Flags", "").split())
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile", "amx_bf16") if f in flags]
    return {
        "model": fields.get("Model name", platform.processor() or platform.machine()).strip(),
        "cpus": os.cpu_count(),
        "isa": isa,
        "bfloat16": bool(flags & {"avx512_bf16", "amx_bf16"}),
    }


def peak_gflops(run, flops_per_run, repeats=5):
    """Best rate of `repeats` timed calls of `run()`, which must block until its
    `flops_per_run` FLOPs are done."""
    run()
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        best = max(best, flops_per_run / (time.perf_counter() - start) / 1e9)
    return best


def matmul_ceiling(size=2048, repeats=5, dtype="float32"):
    """TensorFlow's best `size` x `size` matmul rate in GFLOP/s (5 products per timing)."""
    import tensorflow as tf

    a = tf.cast(tf.random.normal((size, size)), dtype)
    b = tf.cast(tf.random.normal((size, size)), dtype)
    product = tf.function(lambda: tf.matmul(a, b))

    def five_products():
        for _ in range(5):
            result = product()
        result.numpy()

    return peak_gflops(five_products, 5 * 2 * size**3, repeats)


def child(config):
    # First, so that TensorFlow loads with the package's oneDNN setting (tf_mtvib/_env.py).
    import tf_mtvib as tm

    # isort: split
    import keras
    import tensorflow as tf

    from tf_mtvib.data.pipeline import load_task_data, make_dataset
    from tf_mtvib.layers import normalization

    tm.distribute.set_precision(config.get("precision", "float32"))
    if not config.get("fused_low_precision_bn", True):
        normalization._FUSED_DTYPES = (tf.float32,)
    data = load_task_data("sample")
    model = tm.build_mtvib(data.tasks, seed=0)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-4),
        jit_compile=config["jit_compile"],
        steps_per_execution=config["steps_per_execution"],
    )
    train = make_dataset(data.x_train, data.y_train, 200, shuffle=True, seed=0, drop_remainder=True).cache()
    model.fit(train, epochs=1, verbose=0)  # trace, compile and warm up
    epochs = 3
    start = time.perf_counter()
    model.fit(train, epochs=epochs, verbose=0)
    seconds = time.perf_counter() - start
    images = epochs * (len(data.x_train) // 200) * 200
    return {
        "images_per_second": images / seconds,
        "flops_per_image": training_flops_per_image(model),
        "ceiling_gflops": matmul_ceiling(),
        "bfloat16_ceiling_gflops": matmul_ceiling(dtype="bfloat16") if config.get("precision") == "bfloat16" else None,
        "final_loss": float(model.evaluate(train, verbose=0, return_dict=True)["loss"]),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS))
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "out", "speed.json"))
    args = parser.parse_args()
    if args.child:
        print("RESULT " + json.dumps(child(json.loads(args.child))), flush=True)
        return
    results = {}
    for name in args.configs:
        config = CONFIGS[name]
        env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": config["onednn"]}
        run = subprocess.run(
            [sys.executable, __file__, "--child", json.dumps(config)], env=env, capture_output=True, text=True
        )
        lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
        if run.returncode or not lines:
            raise SystemExit(f"{name} failed:\n{run.stderr[-3000:]}")
        result = json.loads(lines[-1][len("RESULT "):])
        result["gflops"] = result["images_per_second"] * result["flops_per_image"] / 1e9
        result["fraction_of_ceiling"] = result["gflops"] / result["ceiling_gflops"]
        results[name] = result
        print(
            f"{name:30s} {result['images_per_second']:7.0f} img/s  {result['gflops']:6.1f} GFLOP/s  "
            f"ceiling {result['ceiling_gflops']:6.1f} GFLOP/s  {100 * result['fraction_of_ceiling']:4.0f} %  "
            f"({result['flops_per_image'] / 1e6:.1f} MFLOP per image and step)",
            flush=True,
        )
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"machine": cpu_info(), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
