"""auto_avsr's visual frontend: a Conv3d stem (5x7x7) then a ResNet-18 trunk applied to every frame."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def frame_mask(lengths: Tensor, frames: int) -> Tensor:
    """lengths (B,) -> (B, T) bool, True on real frames."""
    return torch.arange(frames, device=lengths.device)[None, :] < lengths[:, None]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm and SiLU, plus a residual (1x1 convolution when the shape changes)."""

    def __init__(self, in_channels: int, channels: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.act = nn.SiLU()
        self.downsample = None
        if stride != 1 or in_channels != channels:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.act(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        residual = x if self.downsample is None else self.downsample(x)
        return self.act(out + residual)


class ResNetTrunk(nn.Module):
    """ResNet-18 on single frames: four layers of two blocks (widths w0..w3, stride 2 from layer 2), global average pool."""

    def __init__(self, widths: list[int]):
        super().__init__()
        channels = widths[0]
        for i, width in enumerate(widths, start=1):
            stride = 1 if i == 1 else 2
            self.add_module(
                f"layer{i}", nn.Sequential(BasicBlock(channels, width, stride), BasicBlock(width, width, 1))
            )
            channels = width
        self.avgpool = nn.AdaptiveAvgPool2d(1)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, C, H, W) -> (N, widths[-1])."""
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.avgpool(x).flatten(1)


class Frontend(nn.Module):
    """Video (B, T, 1, H, W) -> per-frame features (B, T, widths[-1]); widths = stem/layer1, layer2, layer3, layer4 channels."""

    def __init__(self, widths: list[int]):
        super().__init__()
        if len(widths) != 4 or min(widths) < 1:
            raise ValueError(f"frontend widths must be 4 positive channel counts, got {widths}")
        self.widths = list(widths)
        self.frontend3D = nn.Sequential(
            nn.Conv3d(1, widths[0], kernel_size=(5, 7, 7), stride=(1, 2, 2), padding=(2, 3, 3), bias=False),
            nn.BatchNorm3d(widths[0]),
            nn.SiLU(),
            nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        )
        self.trunk = ResNetTrunk(widths)

    def forward(self, x: Tensor, lengths: Tensor) -> Tensor:
        """x (B, T, 1, H, W), lengths (B,) -> (B, T, widths[-1]); padded frames are zeroed before the temporal Conv3d."""
        b, t = x.shape[:2]
        x = x * frame_mask(lengths, t)[:, :, None, None, None].to(x.dtype)  # (B, T, 1, H, W)
        x = self.frontend3D(x.transpose(1, 2))  # (B, C, T, H', W')
        x = x.transpose(1, 2).flatten(0, 1)  # (B * T, C, H', W')
        return self.trunk(x).view(b, t, -1)  # (B, T, widths[-1])
