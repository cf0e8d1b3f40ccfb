"""Robustness sweeps (MTVIB Tables III-V, Fig. 5; MTRobust Sec. 5) and the
gradient-norm vulnerability measure (MTRobust Theorem 1)."""

import csv
import io
import os

import numpy as np
import tensorflow as tf

from tf_mtvib.attacks import gradients as g
from tf_mtvib.attacks import loop
from tf_mtvib.attacks.fgsm import fast_gradient_method
from tf_mtvib.attacks.mim import momentum_iterative_method
from tf_mtvib.attacks.pgd import projected_gradient_descent
from tf_mtvib.data import atomic, validation

MTVIB_EPS = (0.0, 0.05, 0.10, 0.15, 0.20, 0.25, 0.30)
ATTACKS = ("fgsm", "pgd", "mim")


def run_attack(name, model, x, y, eps, tasks=None, nb_iter=10, eps_iter=None, seed=0, **kwargs):
    """Runs one named attack in [0, 1] image space with the usual settings:
    FGSM; PGD with `nb_iter` steps of `eps_iter` (default 2.5 eps / nb_iter)
    from a random start; MIM with `nb_iter` steps of eps / nb_iter."""
    common = dict(clip_min=0.0, clip_max=1.0, tasks=tasks, **kwargs)
    if name == "fgsm":
        return fast_gradient_method(model, x, eps, y=y, **common)
    if name == "pgd":
        step = eps_iter if eps_iter is not None else min(eps, 2.5 * eps / nb_iter)
        return projected_gradient_descent(model, x, eps, step, nb_iter, y=y, seed=seed, **common)
    if name == "mim":
        step = eps_iter if eps_iter is not None else eps / nb_iter
        return momentum_iterative_method(model, x, eps, step, nb_iter, y=y, **common)
    raise ValueError(f"`attack` must be one of {ATTACKS}, received {name!r}.")


def _correct(model, x, y, names, latent_samples):
    outputs = model(x, training=False, latent_samples=latent_samples) if latent_samples else model(x, training=False)
    return {t: np.argmax(outputs[t], axis=-1) == np.asarray(y[t]).reshape(-1) for t in names}


def adversarial_accuracy(model, x, y, attack="fgsm", eps=0.1, tasks=None, batch_size=500, sampled=False,
                         mc_samples=12, eot_samples=8, **attack_kwargs):
    """Per-task and joint accuracy on adversarial examples.

    Args:
        model: a `MultiTaskVIB` (or Keras model with dict outputs).
        x, y: images in [0, 1] `(n, ...)` and `{task: labels (n,)}`.
        attack: 'fgsm', 'pgd' or 'mim'; tasks: the attacked task set.
        sampled: attack the sampled model with EOT over `eot_samples` draws
            and score its `mc_samples`-sample prediction, instead of the mean code.
        attack_kwargs: passed to the attack (e.g. `nb_iter`, `cache`: a
            `loop.AttackCache`; default value: one for this call's batches).

    Returns:
        `{task: accuracy, ..., "joint": all classification tasks right}`.
    """
    validation.check_model_data(model, x, y)
    attack_kwargs.setdefault("cache", loop.AttackCache())
    names = [t.name for t in model.tasks if t.is_classification] if hasattr(model, "tasks") else list(y)
    right = {t: [] for t in names}
    for start in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[start: start + batch_size])
        yb = {t: np.asarray(v)[start: start + batch_size] for t, v in y.items()}
        if eps > 0:
            extra = dict(stochastic=True, eot_samples=eot_samples) if sampled else {}
            xb = run_attack(attack, model, xb, yb, eps, tasks=tasks, **extra, **attack_kwargs)
        for t, r in _correct(model, xb, yb, names, mc_samples if sampled else None).items():
            right[t].append(r)
    right = {t: np.concatenate(r) for t, r in right.items()}
    result = {t: float(r.mean()) for t, r in right.items()}
    result["joint"] = float(np.all(np.stack(list(right.values())), axis=0).mean())
    return result


def robustness_sweep(model, x, y, eps_values=MTVIB_EPS, attacks=("fgsm",), task_sets=None, sampled=None,
                     batch_size=500, **kwargs):
    """Accuracy under attack for every (attack, attacked task set, eps, model mode).

    Args:
        task_sets: list of attacked task lists. Default value: each
            classification task alone and all of them together.
        sampled: model modes to score: `[False]` (mean code), `[True]`
            (sampled model), default both for models with a bottleneck.

    Returns:
        A list of rows `{"attack", "tasks", "eps", "mode", "accuracy": {...}}`.
    """
    names = [t.name for t in model.tasks if t.is_classification]
    if task_sets is None:
        task_sets = [[t] for t in names] + ([names] if len(names) > 1 else [])
    if sampled is None:
        sampled = [False, True] if getattr(model, "bottlenecks", None) else [False]
    kwargs.setdefault("cache", loop.AttackCache())  # one trace per attack setting for the whole sweep
    rows = []
    for attack in attacks:
        for task_set in task_sets:
            for mode in sampled:
                for eps in eps_values:
                    accuracy = adversarial_accuracy(
                        model, x, y, attack, eps, tasks=list(task_set), batch_size=batch_size, sampled=mode, **kwargs
                    )
                    rows.append({
                        "attack": attack,
                        "tasks": "+".join(task_set),
                        "eps": float(eps),
                        "mode": "sampled" if mode else "mean",
                        "accuracy": accuracy,
                    })
    return rows


def gradient_norms(model, x, y, tasks=None, task_weights=None, batch_size=500, stochastic=False, eot_samples=1,
                   cache=None):
    """Per-example ||d L_all / d x||_2 (MTRobust Lemma 1, Eq. 5), shape `(n,)`.

    `L_all = sum_c lambda_c L_c` over the attacked `tasks`; `task_weights`
    (lambda_c) default to 1/M, so the measured gradient is the mean of the M
    tasks' input gradients, as in MTRobust's Theorem 1 and Fig. 4c. Pass
    `task_weights=[1.0] * M` for the plain sum.
    """
    validation.check_model_data(model, x, y, require_all_labels=False)  # before batching (an empty x too)
    cache = cache if cache is not None else loop.AttackCache()
    norms = []
    for start in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[start: start + batch_size])
        yb = {t: np.asarray(v)[start: start + batch_size] for t, v in y.items()}
        fn, names, weights, labels, kinds = g.setup(model, xb, yb, tasks, task_weights, stochastic)

        # cache.function calls build() at once, only for a new key: names, weights and stochastic are in the
        # key, and fn and kinds follow from (model, stochastic), which the cache keys on too.
        def build(fn=fn, names=names, weights=weights, kinds=kinds):
            def norm(x, batch_labels):
                gradient, _ = g.loss_gradient(fn, x, batch_labels, names, weights, kinds, eot_samples)
                return tf.norm(tf.reshape(gradient, [tf.shape(x)[0], -1]), axis=1)

            return norm

        compiled = cache.function(model, ("gradnorm", names, weights, stochastic, eot_samples), build)
        norms.append(compiled(xb, labels).numpy())
    return np.concatenate(norms)


def vulnerability(model, x, y, task_sets, **kwargs):
    """`{"a+b": E_x ||d L_all / d x||_2}` for each attacked task set (MTRobust
    Definition 1 to first order); lambda_c = 1/M within each set unless
    `task_weights` is given (see `gradient_norms`)."""
    kwargs.setdefault("cache", loop.AttackCache())
    return {"+".join(s): float(np.mean(gradient_norms(model, x, y, tasks=list(s), **kwargs))) for s in task_sets}


def write_sweep(rows, out_dir, title="accuracy under attack"):
    """Writes `robustness.json`, `robustness.csv` and `robustness.png` atomically.

    The plot has one panel per (attack, attacked task set): accuracy against
    eps for each scored task and the joint accuracy, per model mode.
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    atomic.write_json(os.path.join(out_dir, "robustness.json"), rows)
    keys = sorted({k for r in rows for k in r["accuracy"]})
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["attack", "tasks", "mode", "eps", *[f"accuracy_{k}" for k in keys]])
    for r in rows:
        writer.writerow([r["attack"], r["tasks"], r["mode"], r["eps"], *[r["accuracy"].get(k, "") for k in keys]])
    with atomic.atomic_path(os.path.join(out_dir, "robustness.csv")) as tmp:
        with open(tmp, "w", newline="") as f:
            f.write(buffer.getvalue())
    panels = sorted({(r["attack"], r["tasks"]) for r in rows})
    figure, axes = plt.subplots(1, len(panels), figsize=(4.5 * len(panels), 3.6), squeeze=False)
    for axis, (attack, tasks) in zip(axes[0], panels):
        for mode in sorted({r["mode"] for r in rows}):
            chosen = sorted(
                (r for r in rows if (r["attack"], r["tasks"], r["mode"]) == (attack, tasks, mode)),
                key=lambda r: r["eps"],
            )
            for k in keys:
                style = "-" if mode == "mean" else "--"
                axis.plot(
                    [r["eps"] for r in chosen], [100 * r["accuracy"][k] for r in chosen], style, marker="o",
                    label=f"{k} ({mode})",
                )
        axis.set_title(f"{attack.upper()} on {tasks}")
        axis.set_xlabel("eps")
        axis.set_ylabel("accuracy (%)")
        axis.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    figure.suptitle(title)
    figure.tight_layout()
    with atomic.atomic_path(os.path.join(out_dir, "robustness.png"), suffix=".png") as tmp:
        figure.savefig(tmp, dpi=100)
    plt.close(figure)


def task_indexed_sweep(model, images, task, labels, eps_values=MTVIB_EPS, attack="fgsm", batch_size=500, **kwargs):
    """Accuracy under attack for VMTL-family models (VMTL Appendix B.5).

    Each example is attacked through, and scored by, the classifier of its own
    task. Args: `images (n, ...)`, `task (n,)` task indices, `labels (n,)`.

    Returns:
        Rows as `robustness_sweep` (`tasks` is 'own task'), with the accuracy
        of each task by name and their unweighted mean, 'average'.
    """
    validation.check_model_data(model, {"images": images, "task": task}, labels)
    images, task, labels = np.asarray(images), np.asarray(task), np.asarray(labels)
    names = list(model.task_names)
    kwargs.setdefault("cache", loop.AttackCache())
    rows = []
    # One callable per task, kept for the whole sweep, so each attack is traced once per task.
    callables = {
        t: (lambda x, t=t: {"label": model({"images": x, "task": tf.fill([tf.shape(x)[0]], t)}, training=False)})
        for t in range(len(names))
    }
    for eps in eps_values:
        accuracy = {}
        for t, name in enumerate(names):
            chosen = task == t
            right = []
            for start in range(0, int(chosen.sum()), batch_size):
                xb = tf.convert_to_tensor(images[chosen][start: start + batch_size])
                yb = labels[chosen][start: start + batch_size]
                if eps > 0:
                    xb = run_attack(attack, callables[t], xb, {"label": yb}, eps, **kwargs)
                logits = model({"images": xb, "task": tf.fill([tf.shape(xb)[0]], t)}, training=False)
                right.append(np.argmax(logits, axis=-1) == yb)
            accuracy[name] = float(np.concatenate(right).mean())
        accuracy["average"] = float(np.mean([accuracy[n] for n in names]))
        rows.append({"attack": attack, "tasks": "own task", "eps": float(eps), "mode": "mean", "accuracy": accuracy})
    return rows
