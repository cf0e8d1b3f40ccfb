"""tf_mtvib against its PyTorch peer (torch_mtvib.py), measured side by side (issue 14).

One command, one process tree: tf_mtvib is measured in one subprocess, then the
PyTorch peer in another (so the two never share thread pools), with the same
protocol for every workload: a warm-up window (tracing, allocation), then
--windows timed windows of --steps-per-window steps; the median window's
images/s is reported. Workloads, MTVIB of Table I (36x36x1, two 10-way tasks):

    training        model.fit, batch 200          | train step (forward, backward, Adam)
    inference       cached tf.function, batch 1,000; model.predict, batch 1,000 | eval forward
    FGSM            both tasks, batch 500, L-inf, eps 0.1, clip [0, 1]
    PGD-10          both tasks, batch 500, random start, eps 0.1, step 0.025

Inputs are random uniform [0, 1) images and random labels (speed does not
depend on the values). Before timing, the peer loads the Keras model's weights
and must give the same logits and loss; the parameter counts must match.
Peak resident memory (ru_maxrss) of fit at batch 200 and of PGD-40 at batch 500
is taken in one fresh subprocess per framework and workload. The CPU (lscpu)
and each framework's float32 (and, where the CPU has AVX512_BF16 / AMX,
bfloat16) 2048^2 matmul peak are recorded. Prints a markdown table and writes
benchmarks/out/peer.json.

    pip install -r benchmarks/peer/requirements.txt
    PYTHONPATH=. python benchmarks/peer/compare.py            # on a quiet machine
    PYTHONPATH=. python benchmarks/peer/compare.py --quick    # smoke run, numbers meaningless
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/, for speed.py

import speed  # noqa: E402  (imports neither TensorFlow nor torch at module level)

WORKLOADS = {  # name: (description, batch, default steps per window)
    "train": ("training, `fit` / train step", 200, 40),
    "infer_function": ("inference, cached `tf.function`", 1000, 10),
    "infer_predict": ("inference, `model.predict`", 1000, 10),
    "fgsm": ("FGSM, both tasks", speed.ATTACK_BATCH, 10),
    "pgd10": ("PGD-10, both tasks", speed.ATTACK_BATCH, 2),
}
QUICK_BATCHES = {"train": 16, "infer_function": 50, "infer_predict": 50, "fgsm": 20, "pgd10": 20}
MEMORY = {"fit": 200, "pgd40": speed.ATTACK_BATCH}  # workload: batch


def run_child(framework, config):
    environment = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (os.path.dirname(os.path.dirname(HERE)), os.environ.get("PYTHONPATH")) if p)}
    environment.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    run = subprocess.run([sys.executable, os.path.join(HERE, "workloads.py"), framework, json.dumps(config)],
                         env=environment, stdout=subprocess.PIPE, text=True)
    lines = [line for line in run.stdout.splitlines() if line.startswith("RESULT ")]
    if run.returncode or not lines:
        raise SystemExit(f"the {framework} subprocess failed (exit {run.returncode}); its stderr is above.")
    return json.loads(lines[-1][len("RESULT "):])


def verify(tf_result, torch_result):
    """The peer must be the same model: same parameter counts, FLOPs, logits and loss."""
    if tf_result["parameters"] != torch_result["parameters"]:
        raise SystemExit(f"parameter counts (trainable, non-trainable) differ: tf_mtvib "
                         f"{tf_result['parameters']}, PyTorch {torch_result['parameters']}.")
    if tf_result["flops_per_image"] != torch_result["flops_per_image"]:
        raise SystemExit(f"FLOPs per image differ: {tf_result['flops_per_image']} against "
                         f"{torch_result['flops_per_image']}.")
    check = torch_result["check"]
    if check["max_logit_difference"] > 1e-3 or check["loss_difference"] > 1e-3:
        raise SystemExit(f"the peer does not compute tf_mtvib's model with its weights: {check}.")


def report(results, cpu, system, quick):
    tf_result, torch_result = results["tf_mtvib"], results["pytorch"]
    rate = lambda r, name: r["workloads"][name]["images_per_second"]  # noqa: E731
    lines = [f"CPU: {cpu['model']}, {cpu['cpus']} logical CPUs, flags {' '.join(cpu['isa'])}",
             f"tf_mtvib: {tf_result['version']}; PyTorch: {torch_result['version']}",
             f"system {system.upper()}, trainable / non-trainable parameters {tf_result['parameters']} (both), "
             f"{tf_result['flops_per_image'] / 1e6:.1f} MFLOP per training image",
             f"peer check: {torch_result['check']}",
             "matmul peak 2048^2, GFLOP/s: " + "; ".join(
                 f"{dtype} tf {tf_result['matmul_gflops'][dtype]:.0f}, torch {torch_result['matmul_gflops'][dtype]:.0f}"
                 for dtype in tf_result["matmul_gflops"]),
             f"load average (1, 5, 15 min) before the run {results['load_average_before']}",
             "inputs: random uniform images and random labels (speed does not depend on the values)"
             + ("; QUICK smoke run, tiny batches: the numbers mean nothing" if quick else ""), "",
             "| images/s (batch) | tf_mtvib | PyTorch | tf_mtvib / PyTorch |", "| --- | --- | --- | --- |"]
    for name, (description, _, _) in WORKLOADS.items():
        ours, theirs = rate(tf_result, name), rate(torch_result, name)
        batch = tf_result["workloads"][name]["batch"]
        lines.append(f"| {description} ({batch:,}) | {ours:,.0f} | {theirs:,.0f} | {ours / theirs:.2f}x |")
    ceiling = tf_result["matmul_gflops"]["float32"]
    lines.append("")
    for label, r in (("tf_mtvib", tf_result), ("PyTorch", torch_result)):
        gflops = rate(r, "train") * r["flops_per_image"] / 1e9
        lines.append(f"training, {label}: {gflops:.1f} GFLOP/s, {100 * gflops / ceiling:.0f} % of the float32 "
                     f"matmul peak {ceiling:.0f} GFLOP/s; windows (images/s) "
                     + ", ".join(f"{v:.0f}" for v in r["workloads"]["train"]["window_images_per_second"]))
    if results.get("memory"):
        lines += ["", "| peak resident memory, MiB (RSS before the workload) | tf_mtvib | PyTorch |",
                  "| --- | --- | --- |"]
        for name, by_framework in results["memory"].items():
            cells = [f"{m['peak_rss_mib']:,.0f} ({m['rss_before_mib']:,.0f})" for m in by_framework.values()]
            memory = next(iter(by_framework.values()))
            label = "fit / train step" if name == "fit" else f"PGD-{memory['nb_iter']} (EOT {memory['eot_samples']})"
            lines.append(f"| {label}, batch {memory['batch']} | " + " | ".join(cells) + " |")
        pgd = results["memory"]["pgd40"]
        lines.append("PGD first call (tf_mtvib traces) / second call, seconds: "
                     + "; ".join(f"{k} {m['first_call_seconds']:.1f} / {m['second_call_seconds']:.1f}"
                                 for k, m in pgd.items()))
    return "\n".join(lines)


def memory_report(results):
    lines = [f"CPU: {results['cpu']['model']}, {results['cpu']['cpus']} logical CPUs; load average before "
             f"{results['load_average_before']}", "",
             "| workload, batch | peak RSS, MiB (before) tf_mtvib | PyTorch | first / second call, s tf_mtvib "
             "| PyTorch |", "| --- | --- | --- | --- | --- |"]
    for name, by_framework in results["memory"].items():
        memory = next(iter(by_framework.values()))
        label = "fit / train step" if name == "fit" else f"PGD-{memory['nb_iter']} (EOT {memory['eot_samples']})"
        cells = [f"{m['peak_rss_mib']:,.0f} ({m['rss_before_mib']:,.0f})" for m in by_framework.values()]
        calls = [f"{m['first_call_seconds']:.1f} / {m['second_call_seconds']:.1f}" if "first_call_seconds" in m
                 else "-" for m in by_framework.values()]
        lines.append(f"| {label}, {memory['batch']} | " + " | ".join(cells + calls) + " |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", choices=("mtvib", "uwl"), default="mtvib")
    parser.add_argument("--windows", type=int, default=3, help="timed windows after the warm-up one")
    parser.add_argument("--steps-per-window", type=int, default=None,
                        help="steps (batches) per window for every workload; default "
                             + ", ".join(f"{k} {v[2]}" for k, v in WORKLOADS.items()))
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    parser.add_argument("--eot-samples", type=int, default=1, help="EOT passes per PGD-40 step (memory run)")
    parser.add_argument("--memory-only", action="store_true",
                        help="only the peak-memory and PGD-40 trace-time subprocesses (no timing windows)")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count(),
                        help="PyTorch intra-op threads (default: all logical CPUs)")
    parser.add_argument("--precision", choices=("float32", "bfloat16"), default="float32",
                        help="compute dtype of both: tf_mtvib's mixed_bfloat16 policy and PyTorch's bfloat16 "
                             "autocast (weights stay float32; the peer check runs in float32)")
    parser.add_argument("--quick", action="store_true", help="tiny batches and 1 step per window: a smoke run")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(HERE), "out", "peer.json"))
    args = parser.parse_args()
    started = time.time()
    cpu = speed.cpu_info()
    batches = {name: (QUICK_BATCHES[name] if args.quick else batch) for name, (_, batch, _) in WORKLOADS.items()}
    steps = {name: args.steps_per_window or (1 if args.quick else default)
             for name, (_, _, default) in WORKLOADS.items()}
    config = {"system": args.system, "windows": args.windows, "steps": steps, "batches": batches,
              "bfloat16": cpu["bfloat16"], "torch_threads": args.torch_threads, "precision": args.precision}
    results = {"cpu": cpu, "system": args.system, "quick": args.quick, "inputs": "random",
               "precision": args.precision,
               "protocol": f"1 warm-up window, median of {args.windows} timed windows",
               "load_average_before": os.getloadavg()}
    if results["load_average_before"][0] > 0.5:
        # PyTorch's OpenMP threads collapse on a loaded CPU far more than TensorFlow's pool.
        print(f"warning: load average {results['load_average_before'][0]:.1f} before the run; "
              "the ratios of a busy machine are not the frameworks'", file=sys.stderr, flush=True)
    if not args.memory_only:
        with tempfile.TemporaryDirectory() as scratch:
            check_path = os.path.join(scratch, "keras_weights.npz")
            for framework in ("tf_mtvib", "pytorch"):
                print(f"== {framework}: timing", file=sys.stderr, flush=True)
                results[framework] = run_child(framework, {**config, "check_path": check_path})
        verify(results["tf_mtvib"], results["pytorch"])
    if not args.no_memory or args.memory_only:
        memory_batches = {"fit": 16, "pgd40": 20} if args.quick else MEMORY
        results["memory"] = {}
        for name in MEMORY:
            for framework in ("tf_mtvib", "pytorch"):
                print(f"== {framework}: peak memory of {name}", file=sys.stderr, flush=True)
                memory_config = {**config, "memory": name, "batches": {**batches, name: memory_batches[name]},
                                 "memory_steps": 2 if args.quick else 10, "eot_samples": args.eot_samples,
                                 "pgd40_iterations": 4 if args.quick else 40}
                results["memory"].setdefault(name, {})[framework] = run_child(framework, memory_config)["memory"]
    results["seconds"] = time.time() - started
    results["load_average_after"] = os.getloadavg()
    text = memory_report(results) if args.memory_only else report(results, cpu, args.system, args.quick)
    results["table"] = text
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump(results, f, indent=2)
    print(text)
    print(f"\n({results['seconds']:.0f} s in all; JSON in {args.out})")


if __name__ == "__main__":
    main()
