"""Model builders, by name: GAttA-enabled ResNets, compact ResNet, the paper's toy model, baselines.

Every builder takes only JSON-able keyword arguments, so a checkpoint can rebuild
its model from ``{"builder": name, "kwargs": {...}}`` alone (see ``checkpoint.py``).
"""
from __future__ import annotations

import os
from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn

from .backbones import CompactResNet, ToyCNN
from ..core.network import GAttANet

__all__ = [
    "BUILDERS",
    "build_model",
    "compact_resnet",
    "gatta_compact_resnet",
    "toy_cnn",
    "gatta_toy",
    "resnet",
    "gatta_resnet18",
    "gatta_resnet34",
    "gatta_resnet50",
]

BUILDERS: Dict[str, Callable[..., nn.Module]] = {}


def _register(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    BUILDERS[fn.__name__] = fn
    return fn


def build_model(builder: str, **kwargs) -> nn.Module:
    """Build a model by builder name.

    Args:
        builder: one of ``BUILDERS`` (e.g. ``"gatta_compact_resnet"``).
        **kwargs: the builder's keyword arguments.
    Returns:
        The model (randomly initialised unless the builder loads weights).
    """
    if builder not in BUILDERS:
        raise ValueError(f"unknown builder {builder!r}; known builders: {sorted(BUILDERS)}")
    return BUILDERS[builder](**kwargs)


def _size2(input_size) -> tuple:
    if isinstance(input_size, int):
        return (input_size, input_size)
    h, w = input_size
    return (int(h), int(w))


@_register
def compact_resnet(
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    blocks: Sequence[int] = (2, 2, 2),
    input_size=28,
    stem_stride: int = 1,
) -> CompactResNet:
    """Baseline compact ResNet (no GAttA). ``input_size`` is recorded for preprocessing only."""
    return CompactResNet(in_channels, num_classes, tuple(widths), tuple(blocks), stem_stride)


@_register
def gatta_compact_resnet(
    in_channels: int = 1,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    blocks: Sequence[int] = (2, 2, 2),
    input_size=28,
    d: int = 32,
    layers: Optional[Sequence[str]] = None,
    alpha_init: float = 0.0,
    freeze_backbone: bool = False,
    keys_from: str = "pass1",
    norm_stats: str = "per_pass",
    stem_stride: int = 1,
) -> GAttANet:
    """Compact ResNet with GAttA on every stage and the class layer (default layers)."""
    backbone = CompactResNet(in_channels, num_classes, tuple(widths), tuple(blocks), stem_stride)
    if layers is None:
        layers = [f"layer{i + 1}" for i in range(len(widths))] + ["fc"]
    return GAttANet(backbone, layers, (in_channels, *_size2(input_size)), d, alpha_init, freeze_backbone, keys_from, norm_stats)


@_register
def toy_cnn(in_channels: int = 3, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128), hidden: int = 128, input_size=32) -> ToyCNN:
    """The paper's toy backbone, 3 conv + 2 dense, without GAttA."""
    return ToyCNN(in_channels, num_classes, tuple(widths), hidden)


@_register
def gatta_toy(
    in_channels: int = 3,
    num_classes: int = 10,
    widths: Sequence[int] = (32, 64, 128),
    hidden: int = 128,
    input_size=32,
    d: int = 16,
    layers: Optional[Sequence[str]] = None,
    alpha_init: float = 0.0,
    freeze_backbone: bool = False,
    keys_from: str = "pass1",
    norm_stats: str = "per_pass",
) -> GAttANet:
    """The paper's toy model: GAttA on conv1..conv3, fc1 and the class units fc2, d = 16."""
    backbone = ToyCNN(in_channels, num_classes, tuple(widths), hidden)
    layers = list(layers) if layers is not None else ["conv1", "conv2", "conv3", "fc1", "fc2"]
    return GAttANet(backbone, layers, (in_channels, *_size2(input_size)), d, alpha_init, freeze_backbone, keys_from, norm_stats)


def _load_state_file(path: str) -> dict:
    if not os.path.isfile(path):
        raise ValueError(f"weights file not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"cannot read weights file {path}: {e}") from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ValueError(f"weights file {path} does not hold a state dict")
    return obj


@_register
def resnet(
    arch: str = "resnet18",
    weights: Optional[str] = None,
    num_classes: int = 1000,
    in_channels: int = 3,
    input_size=224,
) -> nn.Module:
    """A torchvision ResNet, optionally with weights.

    Args:
        arch: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"``.
        weights: None (random), a torchvision weights name such as ``"IMAGENET1K_V1"``,
            ``"ResNet18_Weights.IMAGENET1K_V1"`` or ``"DEFAULT"`` (downloads; needs a network), or the
            path of a local state-dict file (offline).
        num_classes: replaces ``fc`` when it differs from the weights' 1000 classes.
        in_channels: replaces ``conv1`` when not 3.
    Returns:
        The torchvision model.
    """
    import torchvision

    if arch not in ("resnet18", "resnet34", "resnet50"):
        raise ValueError(f"arch must be resnet18, resnet34 or resnet50, got {arch!r}")
    fn = getattr(torchvision.models, arch)
    local = weights is not None and (os.sep in weights or weights.endswith((".pt", ".pth")) or os.path.exists(weights))
    if weights is None or local:
        model = fn(weights=None)
        if local:
            try:
                model.load_state_dict(_load_state_file(weights))
            except RuntimeError as e:  # missing, unexpected or misshapen tensors
                raise ValueError(f"weights file {weights} does not fit torchvision's {arch}: {str(e)[:300]}") from None
    else:
        enum = torchvision.models.get_model_weights(arch)
        prefix, _, member = weights.rpartition(".")  # "ResNet18_Weights.IMAGENET1K_V1" or "IMAGENET1K_V1"
        if prefix and prefix != enum.__name__:
            raise ValueError(f"weights {weights!r} are not for {arch} (its weights are {enum.__name__}.*)")
        try:
            w = enum[member] if member != "DEFAULT" else enum.DEFAULT
        except KeyError:
            raise ValueError(f"unknown torchvision weights {weights!r} for {arch}; known: {[m.name for m in enum]}") from None
        try:
            model = fn(weights=w)
        except Exception as e:  # noqa: BLE001 - offline machines end here
            raise ValueError(
                f"could not download torchvision weights {arch}/{weights} ({e}); without a network pass a local "
                "state-dict file instead (weights=PATH, gatta-viz train --weights PATH)"
            ) from None
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, kernel_size=7, stride=2, padding=3, bias=False)
    if num_classes != model.fc.out_features:
        model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


RESNET_LAYERS = ["layer1", "layer2", "layer3", "layer4", "fc"]


def _gatta_resnet(arch: str, weights, num_classes, in_channels, input_size, d, layers, alpha_init, freeze_backbone, keys_from, norm_stats) -> GAttANet:
    backbone = resnet(arch, weights, num_classes, in_channels, input_size)
    net = GAttANet(
        backbone,
        list(layers) if layers is not None else RESNET_LAYERS,
        (in_channels, *_size2(input_size)),
        d,
        alpha_init,
        freeze_backbone,
        keys_from,
        norm_stats,
    )
    if freeze_backbone:  # layers made new for this data cannot stay at their random values: they learn
        for name in _new_layers(num_classes, in_channels):
            for p in getattr(backbone, name).parameters():
                p.requires_grad_(True)
    return net


def _new_layers(num_classes: int, in_channels: int) -> list:
    """The ResNet layers :func:`resnet` makes new instead of taking from the weights: ``fc`` for other than
    1000 classes, ``conv1`` for other than 3 channels."""
    return (["fc"] if num_classes != 1000 else []) + (["conv1"] if in_channels != 3 else [])


def _make_gatta_resnet(arch: str) -> Callable[..., GAttANet]:
    def builder(
        weights: Optional[str] = None,
        num_classes: int = 1000,
        in_channels: int = 3,
        input_size=224,
        d: int = 64,
        layers: Optional[Sequence[str]] = None,
        alpha_init: float = 0.0,
        freeze_backbone: bool = False,
        keys_from: str = "pass1",
        norm_stats: str = "per_pass",
    ) -> GAttANet:
        return _gatta_resnet(
            arch, weights, num_classes, in_channels, input_size, d, layers, alpha_init, freeze_backbone, keys_from, norm_stats
        )

    builder.__name__ = f"gatta_{arch}"
    builder.__qualname__ = builder.__name__
    builder.__doc__ = (
        f"GAttA-enabled torchvision {arch} (layers layer1..layer4 and fc by default, d = 64).\n\n"
        "Args:\n    weights: None, a torchvision weights name ('IMAGENET1K_V1', 'DEFAULT'; needs a network)\n"
        "        or a local state-dict path.\n    num_classes, in_channels, input_size, d, layers, alpha_init,\n"
        "    freeze_backbone, keys_from, norm_stats: see GAttANet; with freeze_backbone the layers made new\n"
        "    for num_classes != 1000 (fc) or in_channels != 3 (conv1) still learn.\nReturns:\n    A GAttANet."
    )
    return _register(builder)


gatta_resnet18 = _make_gatta_resnet("resnet18")
gatta_resnet34 = _make_gatta_resnet("resnet34")
gatta_resnet50 = _make_gatta_resnet("resnet50")
