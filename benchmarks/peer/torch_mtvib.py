"""A PyTorch peer of tf_mtvib's Table I models (MTVIB and UWL), for speed comparisons only.

Written for benchmarks/peer/compare.py; it is not part of the package and
imports nothing from it. Layer for layer it is `tf_mtvib.build_mtvib` /
`build_uwl` on 36x36x1 images (MultiMNIST):

    Conv 3x3 64 (valid) + BN + ReLU + MaxPool 2   x 2    36 -> 34 -> 17 -> 15 -> 7
    flatten (H, W, C order, as Keras)                    7 * 7 * 64 = 3136
    MTVIB: FC 1024 + BN + ReLU x 3, Gaussian bottleneck (d = 256),
           per task FC 384 + BN + ReLU, FC 192 + BN + ReLU, FC 10
    UWL:   FC 384 + BN + ReLU, per task FC 192 + BN + ReLU, FC 10

with Keras' initializers (Glorot-uniform kernels, zero biases), batch-norm
epsilon 1e-3 and momentum 0.9 in Keras' convention (0.1 in PyTorch's), and the
same loss (MTVIB Eq. 23):

    sum_k exp(-s_k) * CE_k + s_k / 2  +  beta * mean_batch KL(N(mu, sigma^2) || N(0, I))

with `sigma = softplus(rho - 5) + 1e-6`, `z = mu + sigma * eps` while
training and `z = mu` at inference, `s_k` clipped to [-10, 10] after every
update and Adam with Keras' epsilon 1e-7.

It runs in PyTorch's fastest plain CPU mode: eager, channels_last tensors,
fused Adam, all cores (`use_cores`).
"""

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

TASKS = ("top_left", "bottom_right")
NUM_CLASSES = 10
INPUT_SHAPE = (1, 36, 36)  # (C, H, W); tf_mtvib's is (36, 36, 1)
# Keras' BN momentum 0.9 weighs the old moving average; PyTorch's weighs the new batch.
BN_MOMENTUM = 0.1
BN_EPSILON = 1e-3
SCALE_SHIFT = 5.0
MIN_SCALE = 1e-6
LOG_VARIANCE_BOUND = 10.0
ARCHITECTURES = {
    "mtvib": {"encoder": (1024, 1024, 1024), "decoder": (384, 192), "latent_dim": 256},
    "uwl": {"encoder": (384,), "decoder": (192,), "latent_dim": None},
}


def use_cores(threads=None):
    """Intra-op threads; default all logical CPUs."""
    torch.set_num_threads(threads or os.cpu_count())


def _glorot(module):
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.xavier_uniform_(module.weight)
        nn.init.zeros_(module.bias)


def _dense_bn_relu(in_features, widths):
    layers = []
    for width in widths:
        layers += [nn.Linear(in_features, width), nn.BatchNorm1d(width, BN_EPSILON, BN_MOMENTUM), nn.ReLU()]
        in_features = width
    return layers, in_features


class SmallAlexNet(nn.Module):
    """Images `(batch, 1, 36, 36)` -> features `(batch, widths[-1])`."""

    def __init__(self, widths):
        super().__init__()
        stem = []
        channels = INPUT_SHAPE[0]
        for _ in range(2):
            stem += [
                nn.Conv2d(channels, 64, 3), nn.BatchNorm2d(64, BN_EPSILON, BN_MOMENTUM), nn.ReLU(), nn.MaxPool2d(2)
            ]
            channels = 64
        self.stem = nn.Sequential(*stem)
        layers, self.out_features = _dense_bn_relu(7 * 7 * 64, widths)
        self.fc = nn.Sequential(*layers)

    def forward(self, images):
        maps = self.stem(images)
        # On a channels_last tensor this permute is a free view, and it flattens
        # in Keras' (H, W, C) order, so Keras weights load without reordering.
        return self.fc(maps.permute(0, 2, 3, 1).flatten(1))


class GaussianBottleneck(nn.Module):
    """Features -> `(z, KL per example)`; z is a sample while training, mu otherwise."""

    def __init__(self, in_features, latent_dim):
        super().__init__()
        self.loc = nn.Linear(in_features, latent_dim)
        self.pre_scale = nn.Linear(in_features, latent_dim)

    def forward(self, features):
        loc = self.loc(features)
        scale = F.softplus(self.pre_scale(features) - SCALE_SHIFT) + MIN_SCALE
        kl = (0.5 * (scale.square() + loc.square() - 1.0) - scale.log()).sum(dim=1)
        if self.training:
            return loc + scale * torch.randn_like(loc), kl
        return loc, kl


class MultiTaskModel(nn.Module):
    """MTVIB or UWL of Table I: images -> ({task: logits (batch, 10)}, KL (batch,) or None)."""

    def __init__(self, system="mtvib", tasks=TASKS, beta=1e-3):
        super().__init__()
        if system not in ARCHITECTURES:
            raise ValueError(f"`system` must be one of {sorted(ARCHITECTURES)}, received system={system!r}.")
        arch = ARCHITECTURES[system]
        self.system = system
        self.tasks = tuple(tasks)
        self.beta = beta
        self.encoder = SmallAlexNet(arch["encoder"])
        code_features = self.encoder.out_features
        self.bottleneck = None
        if arch["latent_dim"] is not None:
            self.bottleneck = GaussianBottleneck(code_features, arch["latent_dim"])
            code_features = arch["latent_dim"]
        self.decoders = nn.ModuleDict()
        for task in self.tasks:
            layers, width = _dense_bn_relu(code_features, arch["decoder"])
            self.decoders[task] = nn.Sequential(*layers, nn.Linear(width, NUM_CLASSES))
        # s_k = log sigma_k^2 of the uncertainty weighting (MTVIB Eq. 22).
        self.log_variances = nn.Parameter(torch.zeros(len(self.tasks)))
        self.apply(_glorot)

    def forward(self, images):
        code = self.encoder(images)
        kl = None
        if self.bottleneck is not None:
            code, kl = self.bottleneck(code)
        return {task: decoder(code) for task, decoder in self.decoders.items()}, kl

    def loss(self, logits, kl, labels):
        """The scalar training loss of MTVIB Eq. 23 (UWL: without the KL)."""
        task_losses = torch.stack([F.cross_entropy(logits[t], labels[t]) for t in self.tasks])
        total = (torch.exp(-self.log_variances) * task_losses + 0.5 * self.log_variances).sum()
        if kl is not None:
            total = total + self.beta * kl.mean()
        return total

    def clip_log_variances(self):
        with torch.no_grad():
            self.log_variances.clamp_(-LOG_VARIANCE_BOUND, LOG_VARIANCE_BOUND)


def channels_last(images):
    """`(batch, 1, 36, 36)` float32 in the memory format the model runs in."""
    return images.contiguous(memory_format=torch.channels_last)


def build(system="mtvib", seed=0):
    torch.manual_seed(seed)
    return MultiTaskModel(system).to(memory_format=torch.channels_last)


def make_optimizer(model, learning_rate=1e-4):
    """Adam as Keras' (epsilon 1e-7); the fused CPU kernel where this torch has it."""
    try:
        return torch.optim.Adam(model.parameters(), lr=learning_rate, eps=1e-7, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(model.parameters(), lr=learning_rate, eps=1e-7, foreach=True)


def parameter_counts(model):
    """`(trainable, non-trainable)` as Keras counts them: BN moving statistics are
    non-trainable weights there, buffers here (without PyTorch's batch counter)."""
    trainable = sum(p.numel() for p in model.parameters())
    moving = sum(b.numel() for name, b in model.named_buffers() if not name.endswith("num_batches_tracked"))
    return trainable, moving


def train_step(model, optimizer, images, labels):
    """One forward + backward + Adam update on a batch; returns the loss tensor."""
    model.train()
    logits, kl = model(images)
    loss = model.loss(logits, kl, labels)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    model.clip_log_variances()
    return loss.detach()


def predict(model, images):
    """Inference logits `{task: (batch, 10)}` from the mean code."""
    model.eval()
    with torch.inference_mode():
        return model(images)[0]


def _attack_gradient(model, images, labels):
    """d/dx of `sum_batch sum_tasks CE` (MTRobust Eq. 1, all task weights 1)."""
    images = images.detach().requires_grad_(True)
    logits, _ = model(images)
    objective = sum(F.cross_entropy(logits[t], labels[t], reduction="sum") for t in model.tasks)
    (gradient,) = torch.autograd.grad(objective, images)
    return gradient


def fgsm(model, images, labels, eps, clip_min=0.0, clip_max=1.0):
    """L-inf fast gradient sign method on all tasks: `clip(x + eps * sign(grad))`."""
    model.eval()
    gradient = _attack_gradient(model, images, labels)
    return (images + eps * gradient.sign()).clamp_(clip_min, clip_max)


def pgd(model, images, labels, eps, eps_iter, nb_iter, clip_min=0.0, clip_max=1.0, eot_samples=1, generator=None):
    """L-inf PGD on all tasks: a uniform start in the eps-box, then `nb_iter`
    signed steps of `eps_iter`, each projected onto the box and the input range.
    `eot_samples` averages each gradient over that many passes, as tf_mtvib's."""
    model.eval()
    noise = torch.rand(images.shape, generator=generator, dtype=images.dtype)
    adversarial = (images + eps * (2.0 * noise - 1.0)).clamp_(clip_min, clip_max)
    adversarial = channels_last(adversarial)
    for _ in range(nb_iter):
        gradient = _attack_gradient(model, adversarial, labels)
        for _ in range(eot_samples - 1):
            gradient = gradient + _attack_gradient(model, adversarial, labels)
        adversarial = adversarial + eps_iter * gradient.sign()
        adversarial = torch.minimum(torch.maximum(adversarial, images - eps), images + eps).clamp_(clip_min, clip_max)
    return adversarial.detach()


def flops_per_image(model):
    """3 x forward FLOPs (2 per multiply-add) of the Conv2d / Linear layers, as benchmarks/speed.py counts."""
    forward = 0
    side = INPUT_SHAPE[1]
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            side -= module.kernel_size[0] - 1
            forward += 2 * side * side * math.prod(module.weight.shape)
            side //= 2  # the max-pooling after it
        elif isinstance(module, nn.Linear):
            forward += 2 * module.weight.numel()
    return 3 * forward


def load_keras_weights(model, arrays):
    """Copies Keras weights, given as `{layer path: [arrays in Keras order]}`
    (see compare.py's `keras_weights`), into the PyTorch modules of the same role."""
    def dense(module, kernel, bias):
        module.weight.copy_(torch.from_numpy(kernel).T)
        module.bias.copy_(torch.from_numpy(bias))

    def bn(module, gamma, beta, mean, variance):
        for target, value in ((module.weight, gamma), (module.bias, beta), (module.running_mean, mean),
                              (module.running_var, variance)):
            target.copy_(torch.from_numpy(value))

    def sequence(modules, prefix):
        blocks = [m for m in modules if isinstance(m, (nn.Conv2d, nn.Linear, nn.BatchNorm1d, nn.BatchNorm2d))]
        keras_layers = [k for k in arrays if k.startswith(prefix)]
        if len(blocks) != len(keras_layers):
            raise ValueError(f"{prefix}: {len(blocks)} PyTorch layers against Keras layers {keras_layers}.")
        for module, name in zip(blocks, keras_layers):
            weights = arrays[name]
            if isinstance(module, nn.Conv2d):  # Keras (kh, kw, in, out) -> (out, in, kh, kw)
                module.weight.copy_(torch.from_numpy(weights[0]).permute(3, 2, 0, 1))
                module.bias.copy_(torch.from_numpy(weights[1]))
            elif isinstance(module, nn.Linear):
                dense(module, *weights)
            else:
                bn(module, *weights)

    with torch.no_grad():
        sequence(list(model.encoder.modules()), "encoder/")
        if model.bottleneck is not None:
            dense(model.bottleneck.loc, *arrays["bottleneck/loc"])
            dense(model.bottleneck.pre_scale, *arrays["bottleneck/pre_scale"])
        for task, decoder in model.decoders.items():
            sequence(list(decoder.modules()), f"decoder_{task}/")
        model.log_variances.copy_(torch.from_numpy(arrays["weighting"][0]))
