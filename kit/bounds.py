"""The kit's bounds on what a config or a file may ask for, checked before anything is allocated or run.

A file from elsewhere (or a typo) can hold any number: a ResNet of width 10**6 or an INR of hidden width 10**6 would
fail deep inside the allocator, and K = 10**9 generations would run until killed. Each bound is far above real use
and says what it is measured against. Pure Python (no torch), so configs can check them when they are built.
"""
from __future__ import annotations

from typing import Sequence

from kit.errors import KitError

DEPTHS = (8, 14, 20, 26, 32, 44, 56, 110)  # common members; any 6n+2 works

# ---------------------------------------------------------------- networks (kit.models)
# Far above real use: the paper's ResNet-56 has width 16 (stages of 16, 32 and 64 channels, 0.86 M weights), the kit's widest benchmark width
# 64 (256 channels, 13.6 M), and a GPU user may train on ImageNet-sized 224×224 images.
MAX_RESNET_DEPTH = 1202  # ResNet-1202, the deepest CIFAR ResNet of He et al. (2016, sec. 4.2)
MAX_CHANNELS = 4096  # channels of any layer: a stage's 4·width (so width ≤ 1024), a block's hidden width, the input's
MAX_CLASSES = 100_000  # outputs of the classifier (ImageNet-21k has 21,841 classes)
MAX_NETWORK_PARAMETERS = 10**9  # weights of the whole network (4 GB in float32)
MAX_SIDE = 4096  # input height and width, in pixels (CIFAR 32, ImageNet 224)
MAX_ACTIVATIONS = 2**28  # values of one image's largest feature map, channels × height × width (1 GiB in float32;
# ResNet-56 × 64 on 224×224 images: 1.3e7)


def blocks_per_stage(depth: int) -> int:
    """n, the blocks per stage of a ResNet of depth 6n + 2; one sentence for any other depth."""
    if type(depth) is not int or depth < 8 or (depth - 2) % 6 or depth > MAX_RESNET_DEPTH:
        raise KitError(f"ResNet depth must be 6n+2 with n ≥ 1, at most {MAX_RESNET_DEPTH} "
                       f"(e.g. {', '.join(map(str, DEPTHS))}); got {depth!r}.")
    return (depth - 2) // 6


def check_size(depth: int, width: int, in_channels: int, num_classes: int, hidden: Sequence[int],
               source: str | None = None) -> None:
    """Refuse, in one sentence and before any allocation, a ResNet beyond the bounds above (`source`: the file that
    asks for it, e.g. 'prior checkpoint /x/prior.pt')."""
    n = blocks_per_stage(depth)
    stages = [width, 2 * width, 4 * width]
    weights = in_channels * width * 9 + stages[2] * num_classes
    cin = width
    for k, h in enumerate(hidden):
        cout = stages[k // n]
        weights += cin * h * 9 + h * cout * 9 + (cin * cout if cin != cout else 0)  # + projection shortcut
        cin = cout
    widest = max([in_channels, *stages, *hidden])
    problem = (f"{widest:,} channels in one layer (at most {MAX_CHANNELS:,})" if widest > MAX_CHANNELS else
               f"{num_classes:,} classes (at most {MAX_CLASSES:,})" if num_classes > MAX_CLASSES else
               f"{weights:,} weights (at most {MAX_NETWORK_PARAMETERS:,})" if weights > MAX_NETWORK_PARAMETERS else None)
    if problem:
        who = f"The {source} asks for" if source else "This network would be"
        raise KitError(f"{who} a ResNet with {problem}, beyond the kit's bounds (kit.bounds), so nothing is "
                       "allocated; use a smaller network (or check the file).")


def check_input_shape(shape, source: str | None = None, channels: int | None = None,
                      widest: int = 1) -> tuple[int, int, int]:
    """(C, H, W) if `shape` is a sane image shape (with `channels` channels when given, and a feature map of `widest`
    channels at full resolution within MAX_ACTIVATIONS); otherwise one sentence, before anything of that size exists."""
    ok = isinstance(shape, (list, tuple)) and len(shape) == 3 and all(type(d) is int and d >= 1 for d in shape)
    where = f" in the {source}" if source else ""
    if not ok:
        raise KitError(f"The input shape{where} must be (channels, height, width), three positive integers; got {shape!r}.")
    c, h, w = shape
    if c > MAX_CHANNELS or max(h, w) > MAX_SIDE or max(c, widest) * h * w > MAX_ACTIVATIONS:
        raise KitError(f"The input shape {tuple(shape)}{where} is beyond the kit's bounds (at most {MAX_CHANNELS} "
                       f"channels, {MAX_SIDE}×{MAX_SIDE} pixels and {MAX_ACTIVATIONS:,} values in one feature map), "
                       "so nothing is allocated; use smaller images or a narrower network.")
    if channels is not None and c != channels:
        raise KitError(f"The input shape {tuple(shape)}{where} has {c} channels but the network takes {channels}.")
    return c, h, w


# ---------------------------------------------------------------- INRs (kit.inr) and K
# Far above real use: the HTTY paper's MLPs are 8 layers of 512 (the `paper` profile), which averages K = 100 generations.
MAX_HIDDEN = 8192  # units per hidden layer of one MLP (16× HTTY's 512)
MAX_INR_DEPTH = 64  # layers per MLP (8× HTTY's 8)
MAX_INR_PARAMETERS = 10**9  # weights of all the MLPs together (4 GB in float32; HTTY on ResNet-56's last stage: 53 M)
MAX_K = 1000  # generations averaged at evaluation or export (10× the paper profile's K = 100)


def check_inr_size(hidden: int, depth: int, who: str = "This INR") -> None:
    """One sentence, before any allocation, when an MLP's hidden width or depth is beyond the bounds above."""
    if hidden > MAX_HIDDEN or depth > MAX_INR_DEPTH:
        raise KitError(f"{who} asks for INR MLPs of hidden width {hidden:,} and depth {depth:,}, beyond the kit's bounds "
                       f"(hidden ≤ {MAX_HIDDEN}, depth ≤ {MAX_INR_DEPTH}), so nothing is allocated; use a smaller INR.")


def check_k(k, who: str = "Asked for") -> int:
    """`k` if it is a number of averaged generations the kit runs (1 … MAX_K); else one sentence, before any work."""
    if type(k) is not int or not 1 <= k <= MAX_K:
        raise KitError(f"{who} K = {k!r} generations averaged, but K must be an integer ≥ 1 and ≤ {MAX_K} (the paper "
                       "profile averages 100).")
    return k
