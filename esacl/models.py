"""Backbones. Each model names its prunable parameters (`prunable`), so sparsifiers never guess."""

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Small ConvNet: a 3x3 stem, two 3x3 stage convs each followed by 2x2 max-pooling, global
    pooling, a linear head. Sized for 8x8 digits; `stem_pool` adds a 2x2 max-pool after the stem for
    28x28 Fashion-MNIST (stage convs at 14x14 and 7x7: a CPU-sized model at that resolution).

    `norm` (per-channel mean and std in 0..1 units) puts an `InputNorm` first, so the model takes
    uint8 images. Prunable (SparCL's convention scaled down): the stage convs; stem, BN and head stay dense.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: int = 32,
        norm: tuple[Sequence[float], Sequence[float]] | None = None,
        stem_pool: bool = False,
    ):
        super().__init__()
        self.input_norm = InputNorm(*norm) if norm is not None else nn.Identity()
        self.stem = conv_bn(in_channels, width)  # [B, w, H, W]
        if stem_pool:
            self.stem.append(nn.MaxPool2d(2))  # [B, w, H / 2, W / 2]
        self.stage1 = nn.Sequential(conv_bn(width, 2 * width), nn.MaxPool2d(2))  # [B, 2w, H' / 2, W' / 2]
        self.stage2 = nn.Sequential(conv_bn(2 * width, 4 * width), nn.MaxPool2d(2))  # [B, 4w, H' / 4, W' / 4]
        self.head = nn.Linear(4 * width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(self.input_norm(x))))
        return x.mean(dim=(2, 3))  # [B, 4w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # [B, n_classes]

    def prunable(self) -> list[str]:
        return ["stage1.0.0.weight", "stage2.0.0.weight"]


class InputNorm(nn.Module):
    """Pixels to normalised inputs, as the model's first module: `(x / 255 - mean) / std` per channel.

    Takes uint8 images or floats on the same 0..255 scale ([B, C, H, W]), so every consumer of a
    benchmark's stored uint8 tensors (training, evaluation, replay, Fisher, landscape, probes) calls
    `model(x)` on them directly. mean and std are buffers in 0..1 units: they travel with the
    state dict and never train. `channels_last` (set by `train.build` for the config key) returns
    the normalised batch in that memory format.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))  # [1, C, 1, 1]
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))  # [1, C, 1, 1]
        self.channels_last = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() / 255 - self.mean) / self.std  # [B, C, H, W] float32
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


class BasicBlock(nn.Module):
    """Two 3x3 convs with batch norm and an identity (or 1x1 conv + BN where the shape changes) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))  # [B, c_out, H / s, W / s]
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNet18(nn.Module):
    """The continual-learning ResNet-18 of Mammoth and SparCL: a 3x3 stride-1 stem (no max-pool), four
    stages of two BasicBlocks (width, 2, 4, 8 x width filters; stride 2 from stage 2), global average
    pooling and a linear head. 32x32 inputs end at 4x4 maps, 64x64 (Tiny-ImageNet) at 8x8.

    `norm` (per-channel mean and std in 0..1 units) puts an `InputNorm` first, so the model takes
    uint8 images; without it the model takes already-normalised floats. Prunable (SparCL's
    convention): the 16 3x3 convs of the residual stages; stem, shortcuts, BN and head stay dense.
    """

    def __init__(
        self,
        in_channels: int,
        n_classes: int,
        width: int = 64,
        norm: tuple[Sequence[float], Sequence[float]] | None = None,
    ):
        super().__init__()
        self.input_norm = InputNorm(*norm) if norm is not None else nn.Identity()
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)
        )  # [B, w, H, W]
        stages, c_in = [], width
        for i, mult in enumerate((1, 2, 4, 8)):
            c_out = mult * width
            stride = 1 if i == 0 else 2
            stages.append(nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out, 1)))
            c_in = c_out
        self.stage1, self.stage2, self.stage3, self.stage4 = stages  # [B, 8w, H / 8, W / 8] at the end
        self.head = nn.Linear(8 * width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(self.input_norm(x))
        x = self.stage4(self.stage3(self.stage2(self.stage1(x))))
        return x.mean(dim=(2, 3))  # [B, 8w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))  # [B, n_classes]

    def prunable(self) -> list[str]:
        return [f"stage{s}.{b}.conv{k}.weight" for s in (1, 2, 3, 4) for b in (0, 1) for k in (1, 2)]


def build_model(
    name: str,
    input_shape: tuple[int, int, int],
    n_classes: int,
    width: int,
    norm: tuple[Sequence[float], Sequence[float]] | None = None,
) -> nn.Module:
    """The backbone a benchmark asks for; `norm` (per-channel mean, std in 0..1 units) makes an
    backbone take uint8 pixels (the digits come as normalised floats and have none)."""
    if name in ("convnet", "convnet28"):
        return ConvNet(input_shape[0], n_classes, width, norm, stem_pool=name == "convnet28")
    if name == "resnet18":
        return ResNet18(input_shape[0], n_classes, width, norm)
    raise ValueError(f"unknown backbone {name!r}")
