"""VMTL (variational multi-task learning with Gumbel-softmax priors), VMTL-AC,
and the comparison systems STL, VSTL and bMTL of the VMTL paper.

The setting: T related tasks, each with its own examples, one shared label
space of C classes. A batch mixes examples of every task:
`x = {"images": (batch, ...), "task": (batch,) int task index}`, `y = (batch,)`
class labels; `model(x)` returns the logits `(batch, C)` of each example's
own task. `tf_mtvib.data.domains.make_domain_dataset` builds such batches.
"""

import keras
import tensorflow as tf
from keras import ops

from tf_mtvib.data import validation
from tf_mtvib.layers.amortized import AmortizedClassifier
from tf_mtvib.layers.bayesian import BayesianDense
from tf_mtvib.layers.bottleneck import GaussianBottleneck
from tf_mtvib.layers.gaussian import kl_to_standard_normal, reparameterized_sample
from tf_mtvib.layers.priors import MIXTURE_KL_KINDS, kl_to_mixture, kl_to_weighted_sum, mixture_prior, other_tasks
from tf_mtvib.models.mtvib import _replica_scale

PRIOR_KINDS = ("gumbel", "learned-weights", "mean", "normal")
CLASSIFIERS = ("bayesian", "amortized")

VMTL_SYSTEMS = ("stl", "bmtl", "vstl", "vmtl", "vmtl-ac", "vmtl-mean", "vmtl-learned-weights")


def _check_inputs(inputs, num_tasks):
    if not isinstance(inputs, dict) or "images" not in inputs or "task" not in inputs:
        raise ValueError(
            "Multi-domain models take `x = {'images': ..., 'task': ...}` (task index per example), "
            f"received {type(inputs).__name__}."
        )
    return inputs["images"], ops.cast(ops.reshape(inputs["task"], (-1,)), "int32")


def _labels(y):
    return ops.cast(ops.reshape(y, (-1,)), "int32")


def _task_mean(values, onehot, sample_weight=None):
    """`(1/T') sum_t (1/N_t) sum_{n in t} values_n` over the T' tasks present
    in the batch: the per-task averages of VMTL Eq. 8, so that a task's weight
    does not depend on its share of the batch. `values (batch,)`,
    `onehot (batch, T)`, optional `sample_weight (batch,)`."""
    weights = onehot if sample_weight is None else onehot * ops.cast(ops.reshape(sample_weight, (-1, 1)), "float32")
    totals = ops.sum(weights, axis=0)
    per_task = ops.sum(weights * values[:, None], axis=0) / ops.maximum(totals, 1e-12)
    present = ops.cast(totals > 0, "float32")
    return ops.sum(per_task * present) / ops.maximum(ops.sum(present), 1.0)


class _MultiDomainModel(validation.DataChecks, keras.Model):
    """Shared plumbing: per-task metrics, extractor sharing, config.

    Both families train through Keras' own `train_step` / `test_step`: the
    subclasses' `compute_loss(x, y, y_pred, sample_weight, training)` is
    the whole objective, so `fit`, `evaluate`, `sample_weight`,
    tf.distribute and mixed precision's loss scaling are Keras'. The
    reported `loss` (and `val_loss`) is that objective.
    """

    # One output scored by each example's own task (`{"images", "task"}`
    # inputs): export and the CLI read this instead of checking classes.
    task_indexed = True

    def __init__(self, num_tasks, num_classes, extractor, input_shape=None, task_names=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(num_tasks, int) or num_tasks < 1:
            raise ValueError(f"`num_tasks` must be a positive int, received num_tasks={num_tasks!r}.")
        if not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an int >= 2, received num_classes={num_classes!r}.")
        self.num_tasks = num_tasks
        self.num_classes = num_classes
        self.example_shape = tuple(input_shape) if input_shape is not None else None
        self.task_names = list(task_names) if task_names else [f"task_{t}" for t in range(num_tasks)]
        if len(self.task_names) != num_tasks:
            raise ValueError(f"`task_names` must name {num_tasks} tasks, received {self.task_names}.")
        if isinstance(extractor, (list, tuple)):
            if len(extractor) != num_tasks:
                raise ValueError(f"`extractor` must be one layer or {num_tasks} layers, received {len(extractor)}.")
            extractor = list(extractor)
        self.extractor = extractor
        self.accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.task_accuracy_trackers = [
            keras.metrics.SparseCategoricalAccuracy(name=f"{n}_accuracy") for n in self.task_names
        ]
        self.nll_tracker = keras.metrics.Mean(name="nll")

    def _build_if_shaped(self):
        # Built at once for a known input shape, so that weights exist before
        # the first call (loading, export, optimizer state).
        if self.example_shape is not None:
            self.build((None,) + self.example_shape)

    def check_data(self, x, y=None, require_all_labels=True):
        """Validates `{"images", "task"}` arrays and class labels (`DataChecks`)."""
        if self.example_shape is not None and isinstance(x, dict):
            validation.check_domain_data(x, y, self.example_shape, self.num_tasks, self.num_classes)

    @property
    def shared_extractor(self):
        return not isinstance(self.extractor, list)

    def features(self, images, onehot, training=None):
        """`(batch, F)`: each example through its task's extractor (or the shared one)."""
        if self.shared_extractor:
            return self.extractor(images, training=training)
        stacked = ops.stack([e(images, training=training) for e in self.extractor], axis=0)
        return ops.einsum("tbf,bt->bf", stacked, onehot)

    def _build_extractors(self, input_shape):
        """Builds the extractor(s) for `input_shape` (of the images, or the
        `{"images": ..., "task": ...}` dict) and returns the feature width."""
        if isinstance(input_shape, dict):
            input_shape = input_shape["images"]
        extractors = [self.extractor] if self.shared_extractor else self.extractor
        for layer in extractors:
            if not layer.built:
                layer.build(input_shape)
        return extractors[0].compute_output_shape(input_shape)[-1]

    def compile(self, optimizer="adam", loss=None, **kwargs):
        if loss is not None:
            raise ValueError(f"{type(self).__name__} computes its own loss; received loss={loss!r}.")
        super().compile(optimizer=optimizer, **kwargs)

    def compile_from_config(self, config):
        self.compile(**keras.saving.deserialize_keras_object(config))
        if self.built:
            self.optimizer.build(self.trainable_variables)

    def _layer_losses(self):
        total = 0.0
        for layer_loss in self.losses:
            total = total + ops.cast(self._aggregate_additional_loss(layer_loss), "float32")
        return total

    @property
    def metrics(self):
        # The z heads are GaussianBottlenecks used only for their posterior
        # parameters; their own KL trackers would log zeros.
        inner = {id(m) for layer in self._flatten_layers(include_self=False) for m in layer.metrics}
        return [m for m in super().metrics if id(m) not in inner]

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        _, task = _check_inputs(x, self.num_tasks)
        labels = _labels(y)
        onehot = ops.one_hot(task, self.num_tasks)
        self.accuracy_tracker.update_state(labels, y_pred, sample_weight=sample_weight)
        for t, tracker in enumerate(self.task_accuracy_trackers):
            weight = onehot[:, t] if sample_weight is None else onehot[:, t] * ops.reshape(sample_weight, (-1,))
            tracker.update_state(labels, y_pred, sample_weight=weight)
        return super().compute_metrics(x, y, y_pred, sample_weight=sample_weight)

    def _base_config(self):
        extractor = (
            keras.saving.serialize_keras_object(self.extractor)
            if self.shared_extractor
            else [keras.saving.serialize_keras_object(e) for e in self.extractor]
        )
        return {
            "name": self.name,
            "num_tasks": self.num_tasks,
            "num_classes": self.num_classes,
            "extractor": extractor,
            "input_shape": None if self.example_shape is None else list(self.example_shape),
            "task_names": self.task_names,
        }

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        extractor = config["extractor"]
        config["extractor"] = (
            [keras.saving.deserialize_keras_object(e) for e in extractor]
            if isinstance(extractor, list)
            else keras.saving.deserialize_keras_object(extractor)
        )
        return cls(**config)


@keras.saving.register_keras_serializable(package="tf_mtvib")
class MultiDomainClassifier(_MultiDomainModel):
    """Deterministic baselines: STL (one extractor per task) and bMTL (a shared
    extractor); each task has its own softmax head. Loss: the per-task mean
    cross-entropy averaged over tasks (as VMTL's Eq. 8 averages)."""

    def __init__(self, num_tasks, num_classes, extractor, input_shape=None, task_names=None, **kwargs):
        super().__init__(num_tasks, num_classes, extractor, input_shape, task_names, **kwargs)
        self.heads = [keras.layers.Dense(num_classes, name=f"head_{t}") for t in range(num_tasks)]
        self._build_if_shaped()

    def build(self, input_shape):
        feature_dim = self._build_extractors(input_shape)
        for head in self.heads:
            head.build((None, feature_dim))
        self.built = True

    def call(self, inputs, training=None):
        images, task = _check_inputs(inputs, self.num_tasks)
        onehot = ops.one_hot(task, self.num_tasks)
        h = self.features(images, onehot, training)
        logits = ops.stack([head(h) for head in self.heads], axis=0)
        return ops.einsum("tbc,bt->bc", logits, onehot)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        _, task = _check_inputs(x, self.num_tasks)
        per_example = keras.losses.sparse_categorical_crossentropy(
            _labels(y), ops.cast(y_pred, "float32"), from_logits=True
        )
        nll = _task_mean(per_example, ops.one_hot(task, self.num_tasks), sample_weight)
        self.nll_tracker.update_state(nll)
        return _replica_scale(nll) + self._layer_losses()

    def get_config(self):
        return self._base_config()


@keras.saving.register_keras_serializable(package="tf_mtvib")
class VMTL(_MultiDomainModel):
    """VMTL (VMTL Eqs. 8 and 13) and its variants.

    For an example x of task t and class y:
    - `h = extractor(x)`; q_t(z|x) = N(mu_t(h), sigma_t(h)^2) (a
      `GaussianBottleneck` head per task);
    - classifier weights w_t: `'bayesian'`, a mean-field `BayesianDense` per
      task (local reparameterization); `'amortized'` (VMTL-AC), each class's
      weight vector generated by an `AmortizedClassifier` from the mean code
      of that class in task t (Eq. 12);
    - priors (`prior`): `'gumbel'`, p(z|x) = sum_{i != t} A_ti q_i(z | m_i^y)
      with m_i^y the mean feature of class y in task i (Eq. 9), and
      p(w_t) = sum_{i != t} A^w_ti q(w_i) (Eq. 11), separate
      `GumbelSoftmaxMixturePrior` weights for z and w; `'mean'` and
      `'learned-weights'` are the ablations of Table 2; `'normal'` is VSTL's
      N(0, I) (pass one extractor per task for no sharing at all).
      The other tasks' posteriors enter task t's prior as constants
      (`stop_gradient`, as the authors' code detaches them): task t's KL
      moves task t's posterior and the mixing weights, never the posteriors
      it is compared with.

    The loss is the negative of Eq. 8 / Eq. 13 estimated on a batch:

        (1/T) sum_t [ (1/B_t) sum_{n in t} ( NLL_n + kl_weight * KL_z,n )
                      + kl_weight * KL_w,t ]

    - NLL_n = -(1/LM) sum_{l,m} log p(y_n | z_l, w_m), L = `z_samples`,
      M = `w_samples`: a mean over samples, per example;
    - KL_z,n: summed over the latent dimensions, one per example;
    - KL_w,t: summed over all of task t's classifier weights, once per task
      and step (Eq. 8 subtracts it once per task; it is not divided by N_t);
    - (1/B_t) sum_{n in t}: the batch estimate of Eq. 8's
      (1/N_t) sum_{n=1..N_t}, so N_t enters only there (`dataset_sizes` is
      recorded, not used).
    KLs to N(0, I) are closed forms. KLs to the mixtures are `mixture_kl`:
    `'monte-carlo'` (default), an estimate from L (KL_z) or M (KL_w) samples
    of the KL to the mixture Eqs. 9 and 11 define, or `'closed-form'`, the KL to the Gaussian
    N(sum A_i mu_i, sum A_i^2 sigma_i^2) the authors' code puts in the
    mixture's place (the paper's Sec. 2.4 says its KLs are closed forms).
    That Gaussian is narrower than every component, and as the KL weight
    grows it pulled VMTL-AC (and VMTL at constant weights >= 0.01) to chance
    on the domains where the Monte Carlo KL did not (README, RESULTS.md).

    KL annealing (Bowman et al. 2016, as in the paper's Sec. 4.2): the
    weight of both KLs is `min(kl_weight, kl_anneal_rate * step)` with step
    the optimizer's iteration count, so it survives checkpoint / resume.
    The defaults are the paper's: the rate 1e-6 per iteration, rising
    towards Eq. 13's weight 1. `kl_anneal_rate=0` uses `kl_weight` from the
    first step (or a `KLAnnealing` callback's schedule). The current weight
    is logged as `kl_weight`.

    The posteriors start wide (`z_scale_shift=0`: sigma_z ~ 0.69;
    `w_scale_shift=3`: sigma_w ~ 0.05) and their scales are bounded
    (`z_max_scale=1`, `w_max_scale=0.1`); see the README for why.

    Class means are those of the current batch where the class occurs in
    it and otherwise a moving average over training batches (also what
    VMTL-AC predicts with at inference).

    At inference `call` predicts from the mean code and the mean weights.
    """

    def __init__(
        self,
        num_tasks,
        num_classes,
        extractor,
        latent_dim=128,
        classifier="bayesian",
        prior="gumbel",
        dataset_sizes=None,
        z_samples=10,
        w_samples=10,
        temperature=1.0,
        kl_weight=1.0,
        kl_anneal_rate=1e-6,
        mixture_kl="monte-carlo",
        class_mean_momentum=0.9,
        amortized_hidden=256,
        z_scale_shift=0.0,
        w_scale_shift=3.0,
        z_max_scale=1.0,
        w_max_scale=0.1,
        seed=None,
        input_shape=None,
        task_names=None,
        **kwargs,
    ):
        super().__init__(num_tasks, num_classes, extractor, input_shape, task_names, **kwargs)
        if classifier not in CLASSIFIERS:
            raise ValueError(f"`classifier` must be one of {CLASSIFIERS}, received classifier={classifier!r}.")
        if prior not in PRIOR_KINDS:
            raise ValueError(f"`prior` must be one of {PRIOR_KINDS}, received prior={prior!r}.")
        if prior != "normal" and num_tasks < 2:
            raise ValueError(f"prior={prior!r} mixes the other tasks' posteriors and needs num_tasks >= 2.")
        if mixture_kl not in MIXTURE_KL_KINDS:
            raise ValueError(f"`mixture_kl` must be one of {MIXTURE_KL_KINDS}, received mixture_kl={mixture_kl!r}.")
        if dataset_sizes is not None and (len(dataset_sizes) != num_tasks or min(dataset_sizes) < 1):
            raise ValueError(
                f"`dataset_sizes` must give the {num_tasks} tasks' training-set sizes, "
                f"received dataset_sizes={dataset_sizes!r}."
            )
        for name, value in (("z_samples", z_samples), ("w_samples", w_samples)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be an int >= 1, received {name}={value!r}.")
        if not kl_weight >= 0:
            raise ValueError(f"`kl_weight` must be >= 0, received kl_weight={kl_weight!r}.")
        if not kl_anneal_rate >= 0:
            raise ValueError(f"`kl_anneal_rate` must be >= 0, received kl_anneal_rate={kl_anneal_rate!r}.")
        if not 0 <= class_mean_momentum < 1:
            raise ValueError(f"`class_mean_momentum` must be in [0, 1), received {class_mean_momentum!r}.")
        self.latent_dim = latent_dim
        self.classifier = classifier
        self.prior = prior
        self.dataset_sizes = None if dataset_sizes is None else [int(n) for n in dataset_sizes]
        self.z_samples = z_samples
        self.w_samples = w_samples
        self.initial_temperature = temperature
        self.max_kl_weight = float(kl_weight)
        self.kl_anneal_rate = float(kl_anneal_rate)
        self.mixture_kl = mixture_kl
        self.class_mean_momentum = class_mean_momentum
        self.amortized_hidden = amortized_hidden
        self.z_scale_shift = z_scale_shift
        self.w_scale_shift = w_scale_shift
        self.z_max_scale = z_max_scale
        self.w_max_scale = w_max_scale
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

        # === Layers ===
        self.z_heads = [
            GaussianBottleneck(latent_dim, beta=0.0, scale_shift=z_scale_shift, max_scale=z_max_scale,
                               name=f"z_posterior_{t}")
            for t in range(num_tasks)
        ]
        if classifier == "bayesian":
            self.w_posteriors = [
                BayesianDense(num_classes, scale_shift=w_scale_shift, max_scale=w_max_scale, name=f"w_posterior_{t}")
                for t in range(num_tasks)
            ]
        else:
            self.amortized = AmortizedClassifier(
                amortized_hidden, scale_shift=w_scale_shift, max_scale=w_max_scale, name="amortized_classifier"
            )
        if prior != "normal":
            self.z_prior = mixture_prior(prior, num_tasks, temperature=temperature, seed=seed, name="z_prior")
            self.w_prior = mixture_prior(
                prior, num_tasks, temperature=temperature, seed=None if seed is None else seed + 1, name="w_prior"
            )

        # === Metrics ===
        self.kl_z_tracker = keras.metrics.Mean(name="kl_z")
        self.kl_w_tracker = keras.metrics.Mean(name="kl_w")
        self.kl_weight_tracker = keras.metrics.Mean(name="kl_weight")
        self._build_if_shaped()

    # --- structure -------------------------------------------------------
    def build(self, input_shape):
        feature_dim = self._build_extractors(input_shape)
        for head in self.z_heads:
            head.build((None, feature_dim))
        if self.classifier == "bayesian":
            for layer in self.w_posteriors:
                layer.build((None, self.latent_dim))
        else:
            self.amortized.build((None, self.latent_dim))
        if self.prior != "normal":
            self.z_prior.build()
            self.w_prior.build()
        # Replicas average their updates of these running statistics.
        self.feature_means = self.add_weight(
            name="feature_means", shape=(self.num_tasks, self.num_classes, feature_dim),
            initializer="zeros", trainable=False, aggregation="mean",
        )
        self.code_means = self.add_weight(
            name="code_means", shape=(self.num_tasks, self.num_classes, self.latent_dim),
            initializer="zeros", trainable=False, aggregation="mean",
        )
        self.class_seen = self.add_weight(
            name="class_seen", shape=(self.num_tasks, self.num_classes), initializer="zeros", trainable=False,
            aggregation="mean",
        )
        initial = 0.0 if self.kl_anneal_rate > 0 else self.max_kl_weight
        self.kl_weight = self.add_weight(
            name="kl_weight", shape=(), initializer=keras.initializers.Constant(initial),
            trainable=False, aggregation="only_first_replica",
        )
        self.built = True

    def _z_params(self, h):
        """Every task's q(z|h): loc and scale `(T, ..., D)`, float32."""
        params = [head.posterior_params(h) for head in self.z_heads]
        return (ops.cast(ops.stack([p[0] for p in params], 0), "float32"),
                ops.cast(ops.stack([p[1] for p in params], 0), "float32"))

    def _own(self, per_task, onehot):
        """Selects each example's own task from `(T, batch, ...)`."""
        return ops.einsum("tb...,bt->b...", per_task, onehot)

    def _class_means(self, values, task, labels, store, update):
        """`(T, C, dim)` per-(task, class) means: the batch's where a class
        occurs in it, else the moving average in `store` (updated when asked)."""
        values = ops.cast(values, "float32")
        segments = task * self.num_classes + labels
        size = self.num_tasks * self.num_classes
        sums = tf.math.unsorted_segment_sum(values, segments, size)
        counts = tf.math.unsorted_segment_sum(ops.ones_like(segments, dtype=values.dtype), segments, size)
        present = ops.reshape(counts > 0, (self.num_tasks, self.num_classes, 1))
        batch = ops.reshape(sums / ops.maximum(counts, 1.0)[:, None], (self.num_tasks, self.num_classes, -1))
        if update:
            seen = self.class_seen[..., None] > 0
            momentum = ops.where(seen, self.class_mean_momentum, 0.0)
            blended = momentum * store + (1.0 - momentum) * ops.stop_gradient(batch)
            store.assign(ops.where(present, blended, store))
        return ops.where(present, batch, store)

    def _amortized_params(self, code_means):
        # The class means are the amortized network's data, as the class-mean
        # features are in the authors' code: KL_w trains the network, and
        # cannot pull the tasks' representations together through them.
        loc, scale = self.amortized(ops.stop_gradient(code_means))  # (T, C, D)
        return ops.cast(loc, "float32"), ops.cast(scale, "float32")

    def _logit_moments(self, z, task_onehot, code_means):
        """Mean and variance of the logits `(..., batch, C)` for codes z `(..., batch, D)`."""
        if self.classifier == "bayesian":
            moments = [layer.output_moments(z) for layer in self.w_posteriors]
            mean = ops.stack([m[0] for m in moments], 0)
            variance = ops.stack([m[1] for m in moments], 0)
            return (
                ops.einsum("t...bc,bt->...bc", mean, task_onehot),
                ops.einsum("t...bc,bt->...bc", variance, task_onehot),
            )
        loc, scale = self._amortized_params(code_means)
        loc_b = ops.einsum("tcd,bt->bcd", loc, task_onehot)
        scale_b = ops.einsum("tcd,bt->bcd", scale, task_onehot)
        return ops.einsum("...bd,bcd->...bc", z, loc_b), ops.einsum("...bd,bcd->...bc", ops.square(z), ops.square(scale_b))

    def _w_posterior_params(self, code_means):
        """Every task's q(w_t) flattened: loc and scale `(T, P)`."""
        if self.classifier == "bayesian":
            params = [layer.posterior_params() for layer in self.w_posteriors]
            loc = ops.stack([ops.reshape(p[0], (-1,)) for p in params], 0)
            scale = ops.stack([ops.reshape(p[1], (-1,)) for p in params], 0)
            return ops.cast(loc, "float32"), ops.cast(scale, "float32")
        loc, scale = self._amortized_params(code_means)
        return ops.reshape(loc, (self.num_tasks, -1)), ops.reshape(scale, (self.num_tasks, -1))

    # --- prediction ------------------------------------------------------
    def call(self, inputs, training=None):
        images, task = _check_inputs(inputs, self.num_tasks)
        onehot = ops.one_hot(task, self.num_tasks)
        h = self.features(images, onehot, training)
        locs, scales = self._z_params(h)
        loc, scale = self._own(locs, onehot), self._own(scales, onehot)
        z = loc
        if training:
            z = reparameterized_sample(loc, scale, self.seed_generator)
        mean, variance = self._logit_moments(z, onehot, self.code_means)
        if training:
            return reparameterized_sample(mean, ops.sqrt(variance), self.seed_generator)
        return mean

    # --- objective -------------------------------------------------------
    def _mixture_kl(self, loc, scale, component_loc, component_scale, weights, num_samples):
        # The other tasks' posteriors are the prior's fixed ingredients.
        component_loc, component_scale = ops.stop_gradient(component_loc), ops.stop_gradient(component_scale)
        if self.mixture_kl == "closed-form":
            return kl_to_weighted_sum(loc, scale, component_loc, component_scale, weights)
        return kl_to_mixture(loc, scale, component_loc, component_scale, weights, num_samples, self.seed_generator)

    def elbo_terms(self, x, y, training=True):
        """The terms of the negative ELBO (VMTL Eq. 13) on a batch.

        Args:
            x: `{"images": (B, ...), "task": (B,)}`; y: labels `(B,)`.
            training: samples the relaxed mixing weights and updates the
                running class means when true.

        Returns:
            `{"nll": (B,) -(1/LM) sum_{l,m} log p(y_n | z_l, w_m),
              "kl_z": (B,) KL_z,n summed over the latent dimensions,
              "kl_w": (T,) KL_w,t summed over task t's weights,
              "logits": (B, C) one sampled prediction}`.
        """
        images, task = _check_inputs(x, self.num_tasks)
        labels = _labels(y)
        onehot = ops.one_hot(task, self.num_tasks)
        h = ops.cast(self.features(images, onehot, training), "float32")
        locs, scales = self._z_params(h)
        loc, scale = self._own(locs, onehot), self._own(scales, onehot)

        feature_means = self._class_means(h, task, labels, self.feature_means, update=training)
        code_means = self._class_means(loc, task, labels, self.code_means, update=training)
        if training:
            counts = tf.math.unsorted_segment_sum(
                ops.ones_like(task, dtype="float32"), task * self.num_classes + labels,
                self.num_tasks * self.num_classes,
            )
            seen_now = ops.reshape(ops.cast(counts > 0, "float32"), self.class_seen.shape)
            self.class_seen.assign(ops.maximum(self.class_seen, seen_now))

        # Likelihood: L code samples, M weight (pre-activation) samples each.
        z = reparameterized_sample(loc, scale, self.seed_generator, (self.z_samples,))
        mean, variance = self._logit_moments(z, onehot, code_means)  # (L, B, C)
        logits = reparameterized_sample(mean, ops.sqrt(variance), self.seed_generator, (self.w_samples,))
        targets = ops.broadcast_to(labels, ops.shape(logits)[:-1])
        nll = ops.mean(keras.losses.sparse_categorical_crossentropy(targets, logits, from_logits=True), axis=(0, 1))

        w_loc, w_scale = self._w_posterior_params(code_means)
        if self.prior == "normal":
            kl_z = kl_to_standard_normal(loc, scale)
            kl_w = kl_to_standard_normal(w_loc, w_scale)
        else:
            others = other_tasks(self.num_tasks)  # (T, T-1)
            # q_i(z | m_i^y) for every task i and class y: (T, C, D).
            prior_params = [head.posterior_params(feature_means[i]) for i, head in enumerate(self.z_heads)]
            prior_locs = ops.cast(ops.stack([p[0] for p in prior_params], 0), "float32")
            prior_scales = ops.cast(ops.stack([p[1] for p in prior_params], 0), "float32")
            index = ops.take(others, task, axis=0) * self.num_classes + labels[:, None]  # (B, T-1)
            flat_locs = ops.reshape(prior_locs, (self.num_tasks * self.num_classes, -1))
            flat_scales = ops.reshape(prior_scales, (self.num_tasks * self.num_classes, -1))
            kl_z = self._mixture_kl(
                loc, scale, ops.take(flat_locs, index, axis=0), ops.take(flat_scales, index, axis=0),
                ops.take(self.z_prior(training=training), task, axis=0), self.z_samples,
            )
            kl_w = self._mixture_kl(
                w_loc, w_scale, ops.take(w_loc, others, axis=0), ops.take(w_scale, others, axis=0),
                self.w_prior(training=training), self.w_samples,
            )
        return {"nll": nll, "kl_z": kl_z, "kl_w": kl_w, "logits": logits[0, 0]}

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        if training and self.kl_anneal_rate > 0 and getattr(self, "optimizer", None) is not None:
            step = ops.cast(self.optimizer.iterations, "float32")
            self.kl_weight.assign(ops.minimum(self.max_kl_weight, self.kl_anneal_rate * step))
        # y_pred (one sampled prediction) is not enough: Eq. 13 needs L x M
        # samples and the posteriors themselves, so the terms are recomputed.
        terms = self.elbo_terms(x, y, training=training)
        _, task = _check_inputs(x, self.num_tasks)
        onehot = ops.one_hot(task, self.num_tasks)
        weight = ops.cast(self.kl_weight, "float32")
        nll = _task_mean(terms["nll"], onehot, sample_weight)
        kl_z = _task_mean(terms["kl_z"], onehot, sample_weight)
        kl_w = ops.mean(terms["kl_w"])
        loss = nll + weight * (kl_z + kl_w)
        self.nll_tracker.update_state(nll)
        self.kl_z_tracker.update_state(kl_z)
        self.kl_w_tracker.update_state(kl_w)
        self.kl_weight_tracker.update_state(weight)
        return _replica_scale(loss) + self._layer_losses()

    def get_config(self):
        return {
            **self._base_config(),
            "latent_dim": self.latent_dim,
            "classifier": self.classifier,
            "prior": self.prior,
            "dataset_sizes": self.dataset_sizes,
            "z_samples": self.z_samples,
            "w_samples": self.w_samples,
            "temperature": self.initial_temperature,
            "kl_weight": self.max_kl_weight,
            "kl_anneal_rate": self.kl_anneal_rate,
            "mixture_kl": self.mixture_kl,
            "class_mean_momentum": self.class_mean_momentum,
            "amortized_hidden": self.amortized_hidden,
            "z_scale_shift": self.z_scale_shift,
            "w_scale_shift": self.w_scale_shift,
            "z_max_scale": self.z_max_scale,
            "w_max_scale": self.w_max_scale,
            "seed": self.seed,
        }


def domain_extractor(input_shape, name="extractor"):
    """Feature extractor for the offline domains (28x28 images) or, for 1-D
    inputs (pre-extracted features), a 256-unit MLP layer: `(batch, 256)`."""
    stack = [keras.Input(tuple(input_shape))]
    if len(input_shape) == 3:
        stack += [
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(64, 3, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
        ]
    stack.append(keras.layers.Dense(256, activation="relu"))
    return keras.Sequential(stack, name=name)


def build_vmtl_system(system, num_tasks, num_classes, input_shape, dataset_sizes=None, latent_dim=128, seed=None,
                      task_names=None, **kwargs):
    """Builds one system of the VMTL paper's comparisons.

    Args:
        system: 'stl' (one deterministic network per task), 'bmtl' (shared
            extractor, task heads), 'vstl' (variational, N(0, I) priors, one
            extractor per task), 'vmtl', 'vmtl-ac' (amortized classifiers),
            'vmtl-mean' / 'vmtl-learned-weights' (the prior ablations).
        dataset_sizes: training examples per task, recorded in the config
            (optional; the objective does not need them).
        kwargs: passed to `VMTL` (z_samples, w_samples, temperature,
            kl_weight, kl_anneal_rate, mixture_kl, ...). The defaults are
            the family's working settings (README, "VMTL").
    """
    if system not in VMTL_SYSTEMS:
        raise ValueError(f"`system` must be one of {VMTL_SYSTEMS}, received system={system!r}.")
    separate = system in ("stl", "vstl")
    extractor = (
        [domain_extractor(input_shape, name=f"extractor_{t}") for t in range(num_tasks)]
        if separate
        else domain_extractor(input_shape)
    )
    common = dict(input_shape=input_shape, task_names=task_names, name=system.replace("-", "_"))
    if system in ("stl", "bmtl"):
        return MultiDomainClassifier(num_tasks, num_classes, extractor, **common)
    prior = {"vstl": "normal", "vmtl-mean": "mean", "vmtl-learned-weights": "learned-weights"}.get(system, "gumbel")
    classifier = "amortized" if system == "vmtl-ac" else "bayesian"
    return VMTL(num_tasks, num_classes, extractor, latent_dim=latent_dim, classifier=classifier, prior=prior,
                dataset_sizes=dataset_sizes, seed=seed, **common, **kwargs)
