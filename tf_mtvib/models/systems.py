"""The five systems of the MTVIB paper (Sec. VI-B): STL, STVIB, GS, UWL and
MTVIB, built from `MultiTaskVIB` with the architectures of Tables I-II."""

from tf_mtvib.distribute import float32_output_dtype
from tf_mtvib.layers.bottleneck import GaussianBottleneck
from tf_mtvib.layers.weighting import FixedWeighting, UncertaintyWeighting
from tf_mtvib.models import backbones
from tf_mtvib.models.mtvib import MultiTaskVIB
from tf_mtvib.tasks import as_tasks

SYSTEMS = ("stl", "stvib", "gs", "uwl", "mtvib")

# Widths of Tables I-II: encoder FC layers after the flatten, decoder FC layers.
_ARCHITECTURES = {
    "stl": {"encoder": (384, 192), "decoder": ()},
    "gs": {"encoder": (384,), "decoder": (192,)},
    "uwl": {"encoder": (384,), "decoder": (192,)},
    "stvib": {"encoder": (1024, 1024, 1024), "decoder": (384, 192)},
    "mtvib": {"encoder": (1024, 1024, 1024), "decoder": (384, 192)},
}


def build_model(
    system,
    tasks,
    input_shape=(36, 36, 1),
    latent_dim=256,
    beta=1e-3,
    task_weights=None,
    num_samples=1,
    seed=None,
    adversarial=None,
    weighting=None,
):
    """Builds one of the five systems of MTVIB Sec. VI-B with Tables I-II.

    Args:
        system: 'stl' (one Small AlexNet per task), 'stvib' (one VIB per task),
            'gs' (shared Small AlexNet, fixed task weights), 'uwl' (shared
            Small AlexNet, uncertainty weights), 'mtvib' (shared encoder,
            Gaussian bottleneck, uncertainty weights).
        tasks: list of `Task`.
        input_shape: `(H, W, C)`; 36x36 selects Table I, 150x150 Table II.
        latent_dim: d of the bottleneck. Default value: `256`.
        beta: KL weight. Default value: `1e-3`.
        task_weights: GS weights, one per task. Default value: equal weights.
        num_samples: latent samples averaged at inference (1 = mean code).
        seed: seed of the bottleneck noise.
        adversarial: optional `AdversarialTraining` settings.
        weighting: 'uncertainty' (learned, Eq. 22-23) or 'fixed' (GS
            weights, equal by default). Default value: the system's own,
            'uncertainty' for UWL / MTVIB and 'fixed' for the others.

    Returns:
        An uncompiled `MultiTaskVIB`.
    """
    if system not in SYSTEMS:
        raise ValueError(f"`system` must be one of {SYSTEMS}, received system={system!r}.")
    tasks = as_tasks(tasks)
    if weighting is None:
        weighting = "uncertainty" if system in ("uwl", "mtvib") else "fixed"
    if weighting not in ("uncertainty", "fixed"):
        raise ValueError(f"`weighting` must be 'uncertainty' or 'fixed', received weighting={weighting!r}.")
    if task_weights is not None and weighting != "fixed":
        raise ValueError(
            f"`task_weights` needs fixed weights, received system={system!r} with weighting={weighting!r}."
        )
    arch = _ARCHITECTURES[system]
    table = backbones.paper_table_for(input_shape)
    separate = system in ("stl", "stvib")
    variational = system in ("stvib", "mtvib")

    def make_encoder(name):
        return backbones.small_alexnet(input_shape, arch["encoder"], table=table, name=name)

    def make_bottleneck(name, offset):
        return GaussianBottleneck(
            latent_dim,
            beta=beta,
            num_samples=num_samples,
            seed=None if seed is None else seed + offset,
            name=name,
        )

    if separate:
        encoder = {t.name: make_encoder(f"encoder_{t.name}") for t in tasks}
        bottleneck = (
            {t.name: make_bottleneck(f"bottleneck_{t.name}", i) for i, t in enumerate(tasks)}
            if variational
            else None
        )
    else:
        encoder = make_encoder("encoder")
        bottleneck = make_bottleneck("bottleneck", 0) if variational else None
    decoders = {
        t.name: backbones.task_decoder(t, arch["decoder"], name=f"decoder_{t.name}")
        for t in tasks
    }
    loss_dtype = float32_output_dtype()
    if weighting == "uncertainty":
        weighting = UncertaintyWeighting([t.kind for t in tasks], name="weighting", dtype=loss_dtype)
    else:
        weighting = FixedWeighting(task_weights, num_tasks=len(tasks), name="weighting", dtype=loss_dtype)
    model = MultiTaskVIB(
        tasks,
        encoder=encoder,
        decoders=decoders,
        bottleneck=bottleneck,
        weighting=weighting,
        input_shape=input_shape,
        adversarial=adversarial,
        name=system,
    )
    model.build((None,) + tuple(input_shape))
    return model


def build_stl(tasks, **kwargs):
    """STL: one Small AlexNet per task (Table I/II (a))."""
    return build_model("stl", tasks, **kwargs)


def build_stvib(tasks, **kwargs):
    """STVIB: one VIB per task (Table I/II (c))."""
    return build_model("stvib", tasks, **kwargs)


def build_gs(tasks, task_weights=None, **kwargs):
    """GS: shared Small AlexNet with fixed task weights (Table I/II (b))."""
    return build_model("gs", tasks, task_weights=task_weights, **kwargs)


def build_uwl(tasks, **kwargs):
    """UWL: shared Small AlexNet with uncertainty weights (Table I/II (b))."""
    return build_model("uwl", tasks, **kwargs)


def build_mtvib(tasks, **kwargs):
    """MTVIB: shared encoder, Gaussian bottleneck, uncertainty weights (Table I/II (d))."""
    return build_model("mtvib", tasks, **kwargs)
