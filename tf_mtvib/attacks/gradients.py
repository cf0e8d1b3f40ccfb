"""The multi-task attack objective, its input gradient (with EOT), and the
projections shared by the attacks.

Objective (MTRobust Eq. 2; MTVIB Eq. 25 for one task): for attacked tasks C,
`L_all(x) = sum_{c in C} lambda_c * L_c(f(x)_c, y_c)`, per example, with
lambda_c = 1/|C| by default (MTRobust Eq. 5 and Theorem 1), so that the joint
gradient is the mean of the tasks' gradients. The attacks step along sign(g)
or g / ||g||, which a common scale of the weights does not change.
"""

import keras
import numpy as np
import tensorflow as tf

from tf_mtvib.data import validation

NORMS = (np.inf, 2)
_TINY = 1e-12


def model_callable(model, stochastic=False):
    """Returns `x -> {task: logits}` for a Keras model or any such callable.

    With `stochastic=True` a `MultiTaskVIB` draws one latent sample per call
    (batch norm and dropout stay in inference mode); otherwise the mean code.
    """
    if isinstance(model, keras.Model):
        if stochastic:
            if not getattr(model, "bottlenecks", None):
                raise ValueError(
                    f"`stochastic=True` needs a model with a Gaussian bottleneck; {model.name!r} has none."
                )
            return lambda x: model(x, training=False, latent_samples=1)
        return lambda x: model(x, training=False)
    if stochastic:
        raise ValueError("`stochastic=True` needs a Keras MultiTaskVIB, received a plain callable.")
    if not callable(model):
        raise TypeError(f"`model_fn` must be a Keras model or a callable, received {type(model).__name__}.")
    return model


def task_kinds_of(model):
    """`{task: kind}` when the model describes its tasks, else `{}` (all classification)."""
    return {t.name: t.kind for t in getattr(model, "tasks", [])}


def resolve_tasks(model, labels, tasks=None, task_weights=None):
    """Checks the attacked tasks and their weights lambda_c.

    `task_weights`: a list (one per task) or a dict by task name. Default
    value: `1 / len(tasks)` each (MTRobust Eq. 5).

    Returns:
        `(tuple of task names, tuple of float weights)`.
    """
    known = list(getattr(model, "task_names", None) or labels)
    if tasks is None:
        kinds = task_kinds_of(model)
        tasks = [t for t in known if kinds.get(t, "classification") == "classification"]
    elif isinstance(tasks, str):
        tasks = [tasks]
    tasks = list(tasks)
    unknown = [t for t in tasks if t not in known]
    if not tasks or unknown:
        raise ValueError(f"`tasks` must name some of the model's tasks {known}, received tasks={tasks!r}.")
    missing = [t for t in tasks if t not in labels]
    if missing:
        raise ValueError(f"`y` has no labels for attacked task(s) {missing}.")
    if task_weights is None:
        task_weights = [1.0 / len(tasks)] * len(tasks)
    elif isinstance(task_weights, dict):
        task_weights = [task_weights[t] for t in tasks]
    task_weights = [float(w) for w in task_weights]
    if len(task_weights) != len(tasks) or any(w < 0 for w in task_weights):
        raise ValueError(
            f"`task_weights` must be {len(tasks)} non-negative numbers (one per attacked task), "
            f"received task_weights={task_weights!r}."
        )
    return tuple(tasks), tuple(task_weights)


def attack_objective(outputs, labels, tasks, task_weights, kinds=None):
    """Per-example `L_all`, shape `(batch,)`: weighted sum of the tasks' losses
    (cross-entropy on logits; mean squared error for regression tasks)."""
    kinds = kinds or {}
    total = 0.0
    for task, weight in zip(tasks, task_weights):
        prediction = tf.cast(outputs[task], tf.float32)
        if kinds.get(task, "classification") == "classification":
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(tf.reshape(labels[task], [-1]), tf.int32), logits=prediction
            )
        else:
            error = tf.square(prediction - tf.cast(labels[task], tf.float32))
            loss = tf.reduce_mean(tf.reshape(error, [tf.shape(error)[0], -1]), axis=1)
        total += weight * loss
    return total


def loss_gradient(model_fn, x, labels, tasks, task_weights, kinds=None, eot_samples=1):
    """`(d L_all / d x, L_all)` per example, each averaged over `eot_samples`
    forward passes (expectation over transformation for stochastic models).

    Shapes: gradient like `x`, loss `(batch,)`.
    """

    def one_pass(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            sample_loss = attack_objective(model_fn(x), labels, tasks, task_weights, kinds)
            # Examples do not interact at inference, so the gradient of the sum
            # is each example's own gradient.
            total = tf.reduce_sum(sample_loss)
        return tape.gradient(total, x), tf.cast(sample_loss, x.dtype)

    if tf.inside_function():
        # The attacks call this in a tf.while_loop. Inlined into a loop body, the
        # pass mostly lost TensorFlow 2.21's oneDNN rewrite of MaxPoolGrad (which
        # needs its forward pool rewritten first) and ran Eigen's kernel, 8x slower
        # on the stem's 34x34x64 maps: FGSM and every PGD step took 1.35x as long,
        # in some traces and not others. A function body of its own is rewritten
        # every time (benchmarks/RESULTS.md, "Attacks in a loop body").
        one_pass = tf.function(one_pass, experimental_attributes={"_noinline": True})

    if eot_samples == 1:
        return one_pass(x)

    def accumulate(i, gradient, loss):
        pass_gradient, pass_loss = one_pass(x)
        return i + 1, gradient + pass_gradient, loss + pass_loss

    # A loop, not eot_samples copies of the model and its gradient in the graph, run
    # one pass at a time (the passes are independent, and the loop would otherwise
    # overlap them): one pass's activations are alive at a time, and tracing does
    # not grow with EOT.
    _, gradient, loss = tf.while_loop(
        lambda i, *_: i < eot_samples, accumulate,
        (tf.constant(0), tf.zeros_like(x), tf.zeros(tf.shape(x)[:1], x.dtype)),
        maximum_iterations=eot_samples, parallel_iterations=1,
    )
    return gradient / eot_samples, loss / eot_samples


def optimal_perturbation(gradient, eps, norm):
    """The steepest ascent step of size eps: eps * sign(g) (L-inf) or eps * g / ||g||_2."""
    if norm == np.inf:
        return eps * tf.sign(gradient)
    axes = list(range(1, len(gradient.shape)))
    length = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(gradient), axes, keepdims=True), _TINY))
    return eps * gradient / length


def project(perturbation, eps, norm):
    """Projects a perturbation onto the eps-ball of the norm."""
    if norm == np.inf:
        return tf.clip_by_value(perturbation, -eps, eps)
    axes = list(range(1, len(perturbation.shape)))
    length = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(perturbation), axes, keepdims=True), _TINY))
    return perturbation * tf.minimum(1.0, eps / length)


def random_start(shape, eps, norm, seed, dtype):
    """A uniform draw from the eps-ball (L-inf box, or L2 ball) from a stateless seed `(2,)`."""
    if norm == np.inf:
        return tf.random.stateless_uniform(shape, seed, -1.0, 1.0, dtype=dtype) * eps
    direction = tf.random.stateless_normal(shape, seed, dtype=dtype)
    axes = list(range(1, len(shape)))
    direction /= tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(direction), axes, keepdims=True), _TINY))
    dims = tf.cast(tf.reduce_prod(shape[1:]), dtype)
    radius = tf.random.stateless_uniform(
        tf.concat([shape[:1], tf.ones([len(shape) - 1], tf.int32)], 0), seed + 1, dtype=dtype
    )
    return eps * direction * radius ** (1.0 / dims)


def check_attack_args(x, eps, norm, clip_min, clip_max, eps_iter=None, nb_iter=None):
    """Raises ValueError naming a bad argument (CleverHans asserts instead);
    `x=None` skips the check of the input range."""
    if norm not in NORMS:
        raise ValueError(f"`norm` must be np.inf or 2, received norm={norm!r}.")
    if not eps >= 0:
        raise ValueError(f"`eps` must be >= 0, received eps={eps!r}.")
    if eps_iter is not None and not 0 <= eps_iter <= eps:
        raise ValueError(f"`eps_iter` must lie in [0, eps={eps}], received eps_iter={eps_iter!r}.")
    if nb_iter is not None and (not isinstance(nb_iter, (int, np.integer)) or nb_iter < 1):
        raise ValueError(f"`nb_iter` must be a positive int, received nb_iter={nb_iter!r}.")
    if clip_min is not None and clip_max is not None and not clip_min < clip_max:
        raise ValueError(f"`clip_min` must be below `clip_max`, received {clip_min!r} and {clip_max!r}.")
    if x is None:
        return
    if x.dtype.is_floating and not bool(tf.reduce_all(tf.math.is_finite(x))):
        raise ValueError("`x` contains NaN or Inf value(s); attacks need finite inputs.")
    low, high = float(tf.reduce_min(x)), float(tf.reduce_max(x))
    if clip_min is not None and low < clip_min - 1e-6:
        raise ValueError(f"`x` has values down to {low}, below clip_min={clip_min}.")
    if clip_max is not None and high > clip_max + 1e-6:
        raise ValueError(f"`x` has values up to {high}, above clip_max={clip_max}.")


def clip_to_range(x, clip_min, clip_max):
    if clip_min is not None or clip_max is not None:
        low = -np.inf if clip_min is None else clip_min
        high = np.inf if clip_max is None else clip_max
        x = tf.clip_by_value(x, low, high)
    return x


def prepare_labels(model_fn, x, y, tasks):
    """Labels of the attacked tasks; the model's own predictions when `y` is None
    (avoids label leaking, as CleverHans)."""
    if y is None:
        outputs = model_fn(x)
        return {t: tf.argmax(outputs[t], axis=-1) for t in tasks}
    return {t: tf.convert_to_tensor(y[t]) for t in tasks}


def seed_tensor(seed_generator):
    return tf.cast(seed_generator.next(), tf.int32)


def setup(model_fn, x, y, tasks, task_weights, stochastic):
    """Common argument handling of the attacks.

    Returns:
        `(callable, tasks, task_weights, labels of the attacked tasks, task kinds)`.
    """
    validation.check_model_data(model_fn, x, y, require_all_labels=False)
    fn = model_callable(model_fn, stochastic)
    if y is not None:
        names = y
    elif getattr(model_fn, "task_names", None):
        names = {t: None for t in model_fn.task_names}
    else:
        names = fn(x[:1])
    tasks, task_weights = resolve_tasks(model_fn, names, tasks, task_weights)
    if y is None:
        # Labels come from the deterministic model even when attacking the sampled one.
        labels = prepare_labels(model_callable(model_fn), x, None, tasks)
    else:
        labels = prepare_labels(fn, x, y, tasks)
    return fn, tasks, task_weights, labels, task_kinds_of(model_fn)
