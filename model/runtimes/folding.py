"""The served copy of a network: batch norms folded into their convs, "same" padding made static.

Two per-layer costs that are pure memory traffic, found by profiling the fp32 batch
path on a 2-core CPU (256 px, EfficientNet-Lite0 teacher and student):

- an eval-mode batch norm is a per-channel affine map; left as its own op it reads
  and writes every activation once more (a quarter to a third of the forward pass).
  Folded into the preceding convolution's weights and bias it costs nothing;
- TensorFlow-style "same" padding (timm's `Conv2dSame`, the Lite backbones' stride-2
  convolutions) pads asymmetrically, which PyTorch's convolution cannot, so timm
  materialises a padded copy of the input with `F.pad` on every call (fill, then
  copy: an eighth of the pass at batch 1, a quarter at batch 4). For a fixed input
  size the padding is fixed: where it is one pixel larger on the right/bottom, a
  kernel one tap larger with a zero first tap and symmetric padding computes exactly
  the same sums, and the convolution pads internally without a copy.

Both are exact in arithmetic (a zero tap adds 0 * x); results differ from the
original network by float rounding only. The copy is valid for the input size it
was made for; `TorchEngine` only ever feeds it that size.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from timm.layers import Conv2dSame
from torch import nn


def serving_copy(network: nn.Module, example: torch.Tensor) -> nn.Module:
    """A copy of `network` (eval mode) for inputs shaped like `example`, folded and padded.

    Which BN follows which conv, and what each same-padded conv receives, is observed
    on one forward pass of `example`, so any architecture works: a BN is folded only
    when its input is exactly the output of one conv that feeds nothing else.
    """
    served = copy.deepcopy(network).eval()
    produced: dict[int, tuple[nn.Conv2d, torch.Tensor]] = {}
    pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]] = []
    sizes: dict[int, tuple[int, int]] = {}

    def after_conv(conv: nn.Module, _inputs: tuple, output: torch.Tensor) -> None:
        produced[id(output)] = (conv, output)  # the tensor is kept so its id stays unique

    def before_conv(conv: nn.Module, inputs: tuple) -> None:
        sizes.setdefault(id(conv), tuple(inputs[0].shape[-2:]))

    def before_bn(bn: nn.Module, inputs: tuple) -> None:
        source = produced.get(id(inputs[0]))
        if source is not None and source[1] is inputs[0]:
            pairs.append((source[0], bn))

    hooks = []
    for module in served.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(after_conv))
            hooks.append(module.register_forward_pre_hook(before_conv))
        elif isinstance(module, nn.BatchNorm2d) and module.track_running_stats:
            hooks.append(module.register_forward_pre_hook(before_bn))
    try:
        with torch.no_grad():
            served(example)
    finally:
        for hook in hooks:
            hook.remove()
    replacements: dict[int, nn.Module] = {}
    with torch.no_grad():
        for conv, bn in _once(pairs):
            _fold(conv, bn)
            replacements[id(bn)] = _what_remains(bn)
        for module in served.modules():
            if isinstance(module, Conv2dSame) and id(module) in sizes:
                replacements[id(module)] = _static_padding(module, sizes[id(module)])
    _replace(served, replacements)
    return served


def _once(pairs: list[tuple[nn.Conv2d, nn.BatchNorm2d]]) -> list[tuple[nn.Conv2d, nn.BatchNorm2d]]:
    """The (conv, bn) pairs where each appears in no other pair (seen once per forward)."""
    convs = [id(conv) for conv, _ in pairs]
    bns = [id(bn) for _, bn in pairs]
    return [(c, b) for c, b in pairs if convs.count(id(c)) == 1 and bns.count(id(b)) == 1]


def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    scale = bn.running_var.add(bn.eps).rsqrt()
    if bn.affine:
        scale = scale * bn.weight
    shift = -bn.running_mean * scale
    if bn.affine:
        shift = shift + bn.bias
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    conv.weight.mul_(scale.view(-1, 1, 1, 1))
    conv.bias = nn.Parameter(bias * scale + shift, requires_grad=False)


def _what_remains(bn: nn.BatchNorm2d) -> nn.Module:
    """The BN's module once its affine map is in the conv: timm's BatchNormAct2d keeps its
    dropout and activation; a plain BN becomes nothing."""
    tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if m is not None]
    tail = [m for m in tail if not isinstance(m, nn.Identity)]
    if not tail:
        return nn.Identity()
    return tail[0] if len(tail) == 1 else nn.Sequential(*tail)


def _static_padding(conv: Conv2dSame, size: tuple[int, int]) -> nn.Module:
    """An nn.Conv2d computing what `conv` computes on inputs of `size`, padding internally."""
    if conv.dilation != (1, 1):
        return conv  # not used by kenpin's backbones; left as timm made it
    weight = conv.weight
    padding = []
    for axis, (length, kernel, stride) in enumerate(
        zip(size, conv.kernel_size, conv.stride, strict=True)
    ):
        total = max((-(-length // stride) - 1) * stride + kernel - length, 0)
        before, after = total // 2, total - total // 2
        if after > before:  # one more on the right/bottom: a leading zero tap, then symmetric
            pad = [0, 0, 0, 0]
            pad[2 * (1 - axis)] = 1  # F.pad lists the last axis first
            weight = F.pad(weight, pad)
        padding.append(after)
    static = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        tuple(weight.shape[-2:]),
        conv.stride,
        tuple(padding),
        groups=conv.groups,
        bias=conv.bias is not None,
    )
    static.weight = nn.Parameter(weight.detach().clone(), requires_grad=False)
    if conv.bias is not None:
        static.bias = nn.Parameter(conv.bias.detach().clone(), requires_grad=False)
    return static.to(memory_format=torch.channels_last)


def _replace(root: nn.Module, replacements: dict[int, nn.Module]) -> None:
    for parent in root.modules():
        for name, child in list(parent.named_children()):
            if id(child) in replacements:
                setattr(parent, name, replacements[id(child)])
