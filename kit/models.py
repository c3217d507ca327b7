"""CIFAR ResNets with a free hidden width per block, BatchNorm folding, and cost counts.

The family of He et al. (2016, sec. 4.2) as NeuMeta and HTTY use it (paper 002 sec. 4.1, paper 000
sec. 4): depth = 6n+2, three stages of n BasicBlocks with widths width·(1, 2, 4), strides (1, 2, 2),
and a 1×1-conv + BN projection shortcut wherever a block changes shape ("option B").

Every BasicBlock has its own inner width `hidden` (conv1: C→hidden, conv2: hidden→C), by default
equal to C; metamorphosis (paper 000 eq. 2) shrinks or grows exactly these widths.

`fold_bn` re-parameterises every BatchNorm into the convolution before it (paper 000 sec. 2.2,
"BN layers"; RepVGG-style): W' = W·γ/√(σ²+ε) per output channel, b' = (b−μ)·γ/√(σ²+ε) + β.
"""
from __future__ import annotations

from typing import Iterator, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from kit.bounds import (DEPTHS, MAX_RESNET_DEPTH, blocks_per_stage, check_input_shape,  # noqa: F401 (re-exported)
                        check_size)
from kit.errors import KitError

ARCH_KEYS = ("depth", "width", "in_channels", "num_classes", "hidden", "batchnorm")  # what `ResNet.arch` holds


def block_names(depth: int) -> list[str]:
    """Names of the residual blocks in forward order: 'layer1.0', ..., 'layer3.{n-1}'."""
    n = blocks_per_stage(depth)
    return [f"layer{s}.{i}" for s in (1, 2, 3) for i in range(n)]


class ConvBN(nn.Module):
    """conv → BN (BN becomes Identity, and the conv gets a bias, once folded).

    A strided 1×1 conv is computed as subsampling then a stride-1 1×1 conv: the same function and weights,
    but it avoids a oneDNN bug in torch 2.13's CPU build, where the weight gradient of a stride-2 1×1 conv on
    channels-last input with 2, 4 or 6 input channels crashes (segfault) or hangs.
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, batchnorm: bool):
        super().__init__()
        self.subsample = stride if kernel == 1 else 1
        self.conv = nn.Conv2d(cin, cout, kernel, stride // self.subsample, kernel // 2, bias=not batchnorm)
        self.bn = nn.BatchNorm2d(cout) if batchnorm else nn.Identity()

    def forward(self, x):
        if self.subsample > 1:
            x = x[:, :, ::self.subsample, ::self.subsample]
        return self.bn(self.conv(x))


class BasicBlock(nn.Module):
    """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x)), with conv1: cin→hidden, conv2: hidden→cout."""

    def __init__(self, cin: int, hidden: int, cout: int, stride: int, batchnorm: bool = True):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, hidden, 3, stride, 1, bias=not batchnorm)
        self.bn1 = nn.BatchNorm2d(hidden) if batchnorm else nn.Identity()
        self.conv2 = nn.Conv2d(hidden, cout, 3, 1, 1, bias=not batchnorm)
        self.bn2 = nn.BatchNorm2d(cout) if batchnorm else nn.Identity()
        self.shortcut = ConvBN(cin, cout, 1, stride, batchnorm) if stride != 1 or cin != cout else None

    @property
    def hidden(self) -> int:
        """Inner width, read from the layer itself (so it stays true after any surgery on the block)."""
        return self.conv1.out_channels

    def forward(self, x):  # x: (B, cin, H, W) → (B, cout, H/stride, W/stride)
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class ResNet(nn.Module):
    def __init__(self, depth: int = 20, width: int = 16, in_channels: int = 3, num_classes: int = 10,
                 hidden: Sequence[int] | dict[str, int] | None = None, batchnorm: bool = True):
        super().__init__()
        n = blocks_per_stage(depth)
        names = block_names(depth)
        stage_widths = [width, 2 * width, 4 * width]
        default = [stage_widths[s] for s in range(3) for _ in range(n)]
        hidden = _resolve_hidden(hidden, names, default)
        check_size(depth, width, in_channels, num_classes, hidden)
        self.depth, self.batchnorm = depth, batchnorm
        self.stem = ConvBN(in_channels, width, 3, 1, batchnorm)
        cin, k = width, 0
        for s, cout in enumerate(stage_widths):
            blocks = []
            for i in range(n):
                stride = 2 if s > 0 and i == 0 else 1
                blocks.append(BasicBlock(cin, hidden[k], cout, stride, batchnorm))
                cin, k = cout, k + 1
            self.add_module(f"layer{s + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)
        self._init()

    def _init(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward(self, x):  # x: (B, in_channels, H, W) → logits (B, num_classes)
        x = F.relu(self.stem(x))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    @property
    def arch(self) -> dict:
        """What `from_arch` needs to rebuild this network; read from the layers, never stored separately."""
        return dict(depth=self.depth, width=self.stem.conv.out_channels, in_channels=self.stem.conv.in_channels,
                    num_classes=self.fc.out_features, hidden=[b.hidden for _, b in self.blocks()],
                    batchnorm=self.batchnorm)

    def run(self, x: torch.Tensor, start: str | None = None, stop: str | None = None) -> torch.Tensor:
        """Part of `forward`: from the image (start None) or from block `start`'s input, up to block `stop`'s input
        (stop None: the logits). run(run(x, stop=b), start=b) == forward(x): a fixed prefix is computed once."""
        names = [n for n, _ in self.blocks()]
        for b in (start, stop):
            if b is not None and b not in names:
                raise KitError(f"Unknown block {b!r}; this ResNet's blocks are {names[0]} … {names[-1]}.")
        x = F.relu(self.stem(x)) if start is None else x
        running = start is None
        for name, block in self.blocks():
            if name == stop:
                return x
            running = running or name == start
            x = block(x) if running else x
        return self.fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))

    def blocks(self) -> Iterator[tuple[str, BasicBlock]]:
        """(name, block) for every residual block, in forward order."""
        for name, module in self.named_modules():
            if isinstance(module, BasicBlock):
                yield name, module

    def conv_bn_pairs(self) -> Iterator[tuple[str, str]]:
        """(conv name, bn name) for every convolution and the norm that follows it."""
        yield "stem.conv", "stem.bn"
        for name, block in self.blocks():
            yield f"{name}.conv1", f"{name}.bn1"
            yield f"{name}.conv2", f"{name}.bn2"
            if block.shortcut is not None:
                yield f"{name}.shortcut.conv", f"{name}.shortcut.bn"


def _resolve_hidden(hidden, names: list[str], default: list[int]) -> list[int]:
    if hidden is None:
        out = list(default)
    elif isinstance(hidden, dict):
        unknown = sorted(set(hidden) - set(names))
        if unknown:
            raise KitError(f"Unknown block {unknown[0]!r} in hidden widths; blocks are {names[0]} … {names[-1]}.")
        out = [hidden.get(n, d) for n, d in zip(names, default)]
    else:
        out = list(hidden)
        if len(out) != len(names):
            raise KitError(f"Got {len(out)} hidden widths for {len(names)} blocks; give one per block or a dict.")
    bad = [h for h in out if not isinstance(h, int) or h < 1]
    if bad:
        raise KitError(f"Hidden widths must be positive integers; got {bad[0]!r}.")
    return out


def resnet(depth: int = 20, width: int = 16, in_channels: int = 3, num_classes: int = 10,
           hidden: Sequence[int] | dict[str, int] | None = None, batchnorm: bool = True) -> ResNet:
    """A CIFAR ResNet; `hidden` sets blocks' inner widths (a list, one per block, or {'layer3.2': 40})."""
    for name, value in (("width", width), ("in_channels", in_channels), ("num_classes", num_classes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise KitError(f"ResNet {name} must be a positive integer; got {value!r}.")
    return ResNet(depth, width, in_channels, num_classes, hidden, batchnorm)


def from_arch(arch: dict, source: str | None = None) -> ResNet:
    """Rebuild the network that `model.arch` describes (what checkpoints store); with `source` (the file it comes
    from) an arch that is malformed or beyond the bounds is refused in one sentence naming it, before any allocation."""
    if source is not None:
        if not isinstance(arch, dict) or set(arch) != set(ARCH_KEYS):
            raise KitError(f"The {source} holds no ResNet architecture this kit can build (it needs exactly "
                           f"{', '.join(ARCH_KEYS)}); use a file written by this kit.")
        fields = [arch[k] for k in ARCH_KEYS[:4]]
        hidden = arch["hidden"]
        if (any(type(v) is not int or v < 1 for v in fields) or type(arch["batchnorm"]) is not bool
                or not isinstance(hidden, list) or any(type(h) is not int or h < 1 for h in hidden)):
            raise KitError(f"The {source} holds a malformed architecture (depth, width, channels, classes and hidden "
                           "widths must be positive integers); use a file written by this kit.")
        depth = arch["depth"]
        if depth < 8 or (depth - 2) % 6 or depth > MAX_RESNET_DEPTH:
            raise KitError(f"The {source} asks for a ResNet of depth {depth:,}, but the kit builds depths 6n+2 from 8 "
                           f"to {MAX_RESNET_DEPTH}, so nothing is allocated; use a file written by this kit.")
        if len(hidden) != 3 * blocks_per_stage(depth):
            raise KitError(f"The {source} gives {len(hidden)} hidden widths for the {3 * blocks_per_stage(depth)} "
                           f"blocks of a ResNet-{depth}; use a file written by this kit.")
        check_size(*fields, hidden, source)
    return resnet(**arch)


@torch.no_grad()
def fold_bn(model: ResNet) -> ResNet:
    """An equivalent network (in eval mode) with every BatchNorm folded into the conv before it."""
    with torch.random.fork_rng(devices=[]):  # the throw-away initialisation must not move the global RNG
        folded = from_arch({**model.arch, "batchnorm": False}).to(next(model.parameters()).device)
    if not model.arch["batchnorm"]:
        folded.load_state_dict(model.state_dict())
        return folded.eval()
    modules = dict(model.named_modules())
    state = {}
    for conv_name, bn_name in model.conv_bn_pairs():
        conv, bn = modules[conv_name], modules[bn_name]
        w = conv.weight.double()  # (O, I, k, k); float64 so folding adds no rounding of its own
        b = conv.bias.double() if conv.bias is not None else torch.zeros(w.shape[0], dtype=torch.float64, device=w.device)
        scale = bn.weight.double() / torch.sqrt(bn.running_var.double() + bn.eps)  # (O,)
        state[f"{conv_name}.weight"] = (w * scale[:, None, None, None]).to(conv.weight.dtype)
        state[f"{conv_name}.bias"] = ((b - bn.running_mean.double()) * scale + bn.bias.double()).to(conv.weight.dtype)
    state["fc.weight"], state["fc.bias"] = model.fc.weight.clone(), model.fc.bias.clone()
    folded.load_state_dict(state)
    return folded.eval()


def load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> nn.Module:
    """load_state_dict that refuses, in one sentence, any missing, extra or mis-shaped tensor."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    extra = [k for k in state if k not in own]
    shaped = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    if missing or extra or shaped:
        if shaped:
            k = shaped[0]
            detail = f"{k} has shape {tuple(state[k].shape)} there but {tuple(own[k].shape)} here"
        else:
            detail = f"tensor {(missing or extra)[0]} is {'missing from it' if missing else 'not in this model'}"
        raise KitError(f"The {source} does not fit this architecture ({detail}); "
                       "use a checkpoint written for the same depth, width and widths, or rebuild the model from it.")
    model.load_state_dict(state)
    return model


def check_tensors(state, source: str) -> dict[str, torch.Tensor]:
    """`state` if it maps names to tensors without NaN or infinity; otherwise one sentence naming the tensor (a
    network with them computes nothing meaningful: it would evaluate to chance, or export broken weights)."""
    if not isinstance(state, dict) or any(type(k) is not str or not isinstance(v, torch.Tensor) for k, v in state.items()):
        raise KitError(f"The {source} does not hold its weights as named tensors; use a file written by this kit.")
    for name, t in state.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise KitError(f"The {source} holds non-finite values (NaN or infinity) in {name}, so it is refused; "
                           "retrain the network it holds, or use another file.")
    return state


def save_plain(model: ResNet, path, **record):
    """Write `model` as a plain-network file in prior.pt's layout (arch, state_dict, plus `record`: what made it),
    atomically; `kit.train.load_prior` reads it back. `python -m kit morph` and the γ explorer's export write these."""
    from kit import io
    state = {k: v.detach().to("cpu") for k, v in model.state_dict().items()}
    return io.save_torch({"arch": model.arch, "state_dict": state, **record}, path)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@torch.no_grad()
def count_macs(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on one image of shape (C, H, W): convs and linears."""
    total = 0

    def hook(module, inputs, output):
        nonlocal total
        if isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            total += output.numel() * (module.in_channels // module.groups) * kh * kw
        elif isinstance(module, nn.Linear):
            total += output.numel() * module.in_features

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    check_input_shape(tuple(input_shape), channels=convs[0].in_channels if convs else None,
                      widest=max((m.out_channels for m in convs), default=1))
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        param = next(model.parameters())
        model.eval()(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return total


def cost(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """{'parameters': …, 'macs': …} of a network, for accuracy-against-cost plots."""
    return {"parameters": count_parameters(model), "macs": count_macs(model, input_shape)}
