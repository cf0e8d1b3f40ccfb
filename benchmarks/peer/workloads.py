"""The measuring subprocesses of compare.py: one framework, one run, one JSON line.

    python benchmarks/peer/workloads.py {tf_mtvib,pytorch} CONFIG_JSON

prints `RESULT {...}`. Every workload follows one protocol (`windows_of`): a
warm-up window, then `config["windows"]` timed windows of
`config["steps"][workload]` steps. With `config["memory"]` set it runs only
that workload once and reports the peak resident memory instead.
"""

import json
import os
import resource
import statistics
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # benchmarks/, for speed.py
sys.path.insert(0, HERE)  # torch_mtvib.py

import speed  # noqa: E402  (imports neither TensorFlow nor torch at module level)

CHECK_BATCH = 4
SIDE = 36


def random_data(count, seed=0):
    """`count` uniform images (count, 36, 36, 1) float32 and `{task: labels (count,)}` int64."""
    import numpy as np

    rng = np.random.default_rng(seed)
    images = rng.random((count, SIDE, SIDE, 1), dtype=np.float32)
    labels = {t: rng.integers(0, 10, count) for t in ("top_left", "bottom_right")}
    return images, labels


def windows_of(run_window, steps, windows):
    """Warm-up window, then `windows` timed ones; `run_window(steps)` returns seconds."""
    run_window(steps)
    return [run_window(steps) for _ in range(windows)]


def summarize(seconds, batch, steps):
    rates = [batch * steps / s for s in seconds]
    return {"batch": batch, "steps_per_window": steps, "window_seconds": seconds,
            "window_images_per_second": rates, "images_per_second": statistics.median(rates)}


def timed(call):
    def run_window(steps):
        start = time.perf_counter()
        for _ in range(steps):
            call()
        return time.perf_counter() - start

    return run_window


def memory_now():
    """`(current, peak)` resident memory in MiB (ru_maxrss is KiB on Linux)."""
    with open("/proc/self/status") as f:
        current = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return current / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --- tf_mtvib -----------------------------------------------------------------

def keras_weights(model):
    """`{'<sublayer>/<layer>': [weights]}` in layer order, the layout torch_mtvib loads."""
    arrays = {}
    for part in (model.encoder, model.bottleneck, *model.decoders.values()):
        if part is None:
            continue
        for layer in getattr(part, "layers", None) or [part.loc_dense, part.scale_dense]:
            if layer.weights:
                arrays[f"{part.name}/{layer.name}"] = [w.numpy() for w in layer.weights]
    arrays["weighting"] = [model.weighting.log_variances.numpy()]
    return arrays


def export_check(model_builder, tasks, path):
    """Writes a perturbed model's weights, its inference logits and loss on a small batch."""
    import numpy as np

    model = model_builder(tasks, seed=1)
    rng = np.random.default_rng(1)
    for weight in model.non_trainable_weights + model.trainable_weights:
        if "gamma" in weight.path or "moving_variance" in weight.path:
            weight.assign(rng.uniform(0.5, 1.5, weight.shape).astype("float32"))
        elif "beta" in weight.path or "moving_mean" in weight.path or "bias" in weight.path:
            weight.assign(rng.normal(0.0, 0.1, weight.shape).astype("float32"))
    model.weighting.log_variances.assign([0.3, -0.2])
    images, labels = random_data(CHECK_BATCH, seed=1)
    logits = model(images, training=False)
    loss = model.compute_loss(images, labels, logits, training=False)
    flat = {f"{key}|{i}": value for key, values in keras_weights(model).items() for i, value in enumerate(values)}
    flat.update({f"logits:{t}": v.numpy() for t, v in logits.items()}, loss=np.float32(loss))
    np.savez(path, **flat)


def tf_child(config):
    # First, so that TensorFlow loads with the package's oneDNN setting (tf_mtvib/_env.py).
    import tf_mtvib as tm

    # isort: split
    import keras
    import tensorflow as tf

    from tf_mtvib import attacks
    from tf_mtvib.data.pipeline import make_dataset

    builder = {"mtvib": tm.build_mtvib, "uwl": tm.build_uwl}[config["system"]]
    tasks = tm.multi_digit_tasks()
    if config.get("check_path"):
        export_check(builder, tasks, config["check_path"])  # in float32, whatever the timed precision
    tm.distribute.set_precision(config.get("precision", "float32"))
    model = builder(tasks, seed=0)
    model.compile(optimizer=keras.optimizers.Adam(1e-4))
    trainable = sum(int(w.numpy().size) for w in model.trainable_weights)
    # The bottleneck's KL weight (beta) is a scalar variable, not a parameter of the model.
    statistics_count = sum(int(w.numpy().size) for w in model.non_trainable_weights if w.name != "kl_weight")
    result = {"version": f"tensorflow {tf.__version__}, keras {keras.__version__}, "
                         f"policy {keras.mixed_precision.global_policy().name}",
              "parameters": [trainable, statistics_count],
              "flops_per_image": speed.training_flops_per_image(model)}
    steps, batches = config["steps"], config["batches"]

    def fit_windows(batch, steps, windows):
        images, labels = random_data(steps * batch)
        dataset = make_dataset(images, labels, batch, drop_remainder=True).cache().repeat()
        seconds = []
        timer = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: seconds.append(-time.perf_counter()),
            on_epoch_end=lambda epoch, logs: seconds.__setitem__(-1, seconds[-1] + time.perf_counter()),
        )
        model.fit(dataset, epochs=1 + windows, steps_per_epoch=steps, verbose=0, callbacks=[timer])
        return seconds[1:]

    def attack_call(name, batch, **overrides):
        images, labels = random_data(batch)
        images = tf.constant(images)
        cache = attacks.AttackCache()  # timed calls reuse the first call's trace
        if name == "fgsm":
            return lambda: attacks.fast_gradient_method(
                model, images, y=labels, cache=cache, **speed.FGSM_THROUGHPUT
            ).numpy()
        settings = {**speed.PGD_THROUGHPUT, **overrides}
        return lambda: attacks.projected_gradient_descent(
            model, images, y=labels, seed=0, cache=cache, **settings
        ).numpy()

    if config.get("memory"):
        # One fit epoch of `memory_steps` batches, its cached input pipeline included.
        return memory_run(config, lambda batch: fit_windows(batch, config["memory_steps"], 0), attack_call)
    result["matmul_gflops"] = {"float32": speed.matmul_ceiling()}
    if config["bfloat16"]:
        result["matmul_gflops"]["bfloat16"] = speed.matmul_ceiling(dtype="bfloat16")

    workloads = {}
    workloads["train"] = summarize(fit_windows(batches["train"], steps["train"], config["windows"]),
                                   batches["train"], steps["train"])
    images = tf.constant(random_data(batches["infer_function"])[0])
    infer = tf.function(lambda x: model(x, training=False))
    call = lambda: [v.numpy() for v in infer(images).values()]  # noqa: E731
    workloads["infer_function"] = summarize(
        windows_of(timed(call), steps["infer_function"], config["windows"]),
        batches["infer_function"], steps["infer_function"])
    batch, count = batches["infer_predict"], steps["infer_predict"]
    images = random_data(batch * count)[0]
    predict_window = timed(lambda: model.predict(images, batch_size=batch, verbose=0))
    workloads["infer_predict"] = summarize(windows_of(predict_window, 1, config["windows"]), batch, count)
    for name in ("fgsm", "pgd10"):
        call = attack_call(name, batches[name])
        workloads[name] = summarize(windows_of(timed(call), steps[name], config["windows"]), batches[name], steps[name])
    result["workloads"] = workloads
    return result


# --- PyTorch ------------------------------------------------------------------

def torch_child(config):
    import torch
    import torch_mtvib as peer

    peer.use_cores(config["torch_threads"])
    model = peer.build(config["system"])
    optimizer = peer.make_optimizer(model)
    result = {"version": f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
                         f"{type(optimizer).__name__} fused={optimizer.defaults.get('fused')}",
              "parameters": list(peer.parameter_counts(model)),
              "flops_per_image": peer.flops_per_image(model)}
    steps, batches = config["steps"], config["batches"]

    def tensors(batch, seed=0):
        images, labels = random_data(batch, seed)
        images = peer.channels_last(torch.from_numpy(images).permute(0, 3, 1, 2))
        return images, {t: torch.from_numpy(v) for t, v in labels.items()}

    def train_call(batch):
        images, labels = tensors(batch)
        return lambda: peer.train_step(model, optimizer, images, labels)

    def attack_call(name, batch, **overrides):
        images, labels = tensors(batch)
        if name == "fgsm":
            return lambda: peer.fgsm(model, images, labels, **speed.FGSM_THROUGHPUT)
        settings = {**speed.PGD_THROUGHPUT, **overrides}
        generator = torch.Generator().manual_seed(0)
        return lambda: peer.pgd(model, images, labels, generator=generator, **settings)

    precise = lambda make_call: make_call  # noqa: E731
    if config.get("precision", "float32") == "bfloat16":
        # PyTorch's own mixed precision on CPUs: bfloat16 autocast, float32 parameters.
        precise = with_autocast
        result["version"] += ", bfloat16 autocast"
    train_call, attack_call = precise(train_call), precise(attack_call)
    if config.get("memory"):
        return memory_run(config, lambda batch: timed(train_call(batch))(config["memory_steps"]), attack_call)
    if config.get("check_path"):
        result["check"] = check_against_keras(peer, config["system"], config["check_path"], tensors)

    def matmul(dtype):
        a, b = (torch.randn(2048, 2048).to(dtype) for _ in range(2))
        return speed.peak_gflops(lambda: [torch.mm(a, b) for _ in range(5)], 5 * 2 * 2048**3)

    result["matmul_gflops"] = {"float32": matmul(torch.float32)}
    if config["bfloat16"]:
        result["matmul_gflops"]["bfloat16"] = matmul(torch.bfloat16)

    calls = {"train": train_call(batches["train"])}
    images = tensors(batches["infer_function"])[0]
    calls["infer_function"] = precise(lambda: lambda: peer.predict(model, images))()
    for name in ("fgsm", "pgd10"):
        calls[name] = attack_call(name, batches[name])
    workloads = {name: summarize(windows_of(timed(call), steps[name], config["windows"]), batches[name], steps[name])
                 for name, call in calls.items()}
    workloads["infer_predict"] = workloads["infer_function"]  # PyTorch has one inference path
    result["workloads"] = workloads
    return result


def with_autocast(make_call):
    """`make_call(...)`'s call, run under `torch.autocast("cpu", torch.bfloat16)`."""
    import torch

    def make(*args, **kwargs):
        call = make_call(*args, **kwargs)

        def run():
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return call()

        return run

    return make


def check_against_keras(peer, system, path, tensors):
    """Loads the Keras weights written by `export_check`; returns the largest
    logit and loss differences at inference on the same images."""
    import numpy as np
    import torch

    saved = np.load(path)
    arrays = {}
    for key in saved.files:
        if "|" in key:
            name, index = key.rsplit("|", 1)
            arrays.setdefault(name, {})[int(index)] = saved[key]
    arrays = {name: [parts[i] for i in sorted(parts)] for name, parts in arrays.items()}
    model = peer.build(system, seed=1)
    peer.load_keras_weights(model, arrays)
    images, labels = tensors(CHECK_BATCH, seed=1)
    model.eval()
    with torch.no_grad():
        logits, kl = model(images)
        loss = float(model.loss(logits, kl, labels))
    logit_error = max(float(np.abs(logits[t].numpy() - saved[f"logits:{t}"]).max()) for t in logits)
    return {"max_logit_difference": logit_error, "loss_difference": abs(loss - float(saved["loss"]))}


# --- memory, shared -----------------------------------------------------------

def memory_run(config, train_steps, attack_call):
    """Peak RSS of one workload in a fresh process: the RSS after building the
    model and data, then the peak after warm-up + timed calls of the workload."""
    name, batch = config["memory"], config["batches"][config["memory"]]
    if name == "pgd40":
        call = attack_call("pgd10", batch, nb_iter=config["pgd40_iterations"], eot_samples=config["eot_samples"])
        before = memory_now()[0]
        first = timed(call)(1)  # tf_mtvib traces here
        second = timed(call)(1)
        extra = {"nb_iter": config["pgd40_iterations"], "eot_samples": config["eot_samples"],
                 "first_call_seconds": first, "second_call_seconds": second}
    else:
        before = memory_now()[0]
        train_steps(batch)
        extra = {"steps": config["memory_steps"]}
    return {"memory": {"workload": name, "batch": batch, "rss_before_mib": before,
                       "peak_rss_mib": memory_now()[1], **extra}}



if __name__ == "__main__":
    framework, config = sys.argv[1], json.loads(sys.argv[2])
    child = {"tf_mtvib": tf_child, "pytorch": torch_child}[framework]
    print("RESULT " + json.dumps(child(config)), flush=True)
