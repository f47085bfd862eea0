"""Plain CNN backbones (no GAttA): a compact ResNet for 28x28/32x32 inputs and the paper's toy model."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

__all__ = ["CompactResNet", "ToyCNN"]


class BasicBlock(nn.Module):
    """3x3-3x3 residual block with a 1x1 projection when shape changes."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU()
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CompactResNet(nn.Module):
    """A small ResNet for 28x28 / 32x32 images (1 or 3 channels).

    Modules named ``stem``, ``layer1`` .. ``layerN``, ``pool``, ``fc`` so that
    GAttA layers can be chosen like torchvision's ResNets.

    Args:
        in_channels: 1 (greyscale) or 3 (RGB).
        num_classes: number of output logits.
        widths: channels of each stage; stage i > 1 halves the resolution.
        blocks: residual blocks per stage.
        stem_stride: stride of the stem convolution; 2 halves every feature map (about 4x cheaper), for
            canvases larger than 32x32 such as the 48x48 scenes.
    Raises:
        ValueError: empty ``widths`` / ``blocks`` or of different lengths, or a ``stem_stride`` other than 1 or 2.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 10,
        widths: Sequence[int] = (32, 64, 128),
        blocks: Sequence[int] = (2, 2, 2),
        stem_stride: int = 1,
    ) -> None:
        super().__init__()
        if len(widths) != len(blocks) or not widths:
            raise ValueError(f"widths {tuple(widths)} and blocks {tuple(blocks)} must be non-empty and of equal length")
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, widths[0], 3, stem_stride, 1, bias=False), nn.BatchNorm2d(widths[0]), nn.ReLU()
        )
        cin = widths[0]
        for i, (w, n) in enumerate(zip(widths, blocks)):
            stride = 1 if i == 0 else 2
            stage = nn.Sequential(*[BasicBlock(cin if j == 0 else w, w, stride if j == 0 else 1) for j in range(n)])
            setattr(self, f"layer{i + 1}", stage)
            cin = w
        self.num_stages = len(widths)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of a batch of images.

        Args:
            x: images (B, in_channels, H, W).
        Returns:
            logits (B, num_classes).
        """
        x = self.stem(x)
        for i in range(self.num_stages):
            x = getattr(self, f"layer{i + 1}")(x)
        return self.fc(self.pool(x))


class ToyCNN(nn.Module):
    """The paper's toy model: 3 conv layers + 2 dense layers (the last = class units).

    Args:
        in_channels: 1 or 3.
        num_classes: number of class units (output of ``fc2``).
        widths: channels of conv1..conv3.
        hidden: units of ``fc1``.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        widths: Sequence[int] = (32, 64, 128),
        hidden: int = 128,
    ) -> None:
        super().__init__()
        c1, c2, c3 = widths
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, c1, 3, padding=1), nn.BatchNorm2d(c1), nn.ReLU())
        self.conv2 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c1, c2, 3, padding=1), nn.BatchNorm2d(c2), nn.ReLU())
        self.conv3 = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(c2, c3, 3, padding=1), nn.BatchNorm2d(c3), nn.ReLU())
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc1 = nn.Sequential(nn.Linear(c3, hidden), nn.ReLU())
        self.fc2 = nn.Linear(hidden, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The logits of a batch of images.

        Args:
            x: images (B, in_channels, H, W).
        Returns:
            logits (B, num_classes).
        """
        x = self.conv3(self.conv2(self.conv1(x)))
        return self.fc2(self.fc1(self.pool(x)))
