"""Backbones. Each model names its prunable parameters (`prunable`), so sparsifiers never guess."""
import torch
from torch import nn


def conv_bn(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class ConvNet(nn.Module):
    """Small ConvNet for 8x8 inputs: a 3x3 stem, two 3x3 stage convs, global pooling, linear head.

    Prunable (SparCL's convention scaled down): the stage convs; stem, BN and head stay dense.
    """

    def __init__(self, in_channels: int, n_classes: int, width: int = 32):
        super().__init__()
        self.stem = conv_bn(in_channels, width)                                    # [B, w, 8, 8]
        self.stage1 = nn.Sequential(conv_bn(width, 2 * width), nn.MaxPool2d(2))      # [B, 2w, 4, 4]
        self.stage2 = nn.Sequential(conv_bn(2 * width, 4 * width), nn.MaxPool2d(2))  # [B, 4w, 2, 2]
        self.head = nn.Linear(4 * width, n_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage2(self.stage1(self.stem(x)))
        return x.mean(dim=(2, 3))                                                  # [B, 4w]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))                                         # [B, n_classes]

    def prunable(self) -> list[str]:
        return ["stage1.0.0.weight", "stage2.0.0.weight"]


def build_model(name: str, input_shape: tuple[int, int, int], n_classes: int, width: int) -> nn.Module:
    """The backbone a benchmark asks for."""
    if name == "convnet":
        return ConvNet(input_shape[0], n_classes, width)
    raise ValueError(f"unknown backbone {name!r}")
