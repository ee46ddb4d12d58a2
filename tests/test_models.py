import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from esacl.flops import FlopMeter, dense_forward_flops
from esacl.models import InputNorm, ResNet18, build_model

NORM = ([0.49, 0.48, 0.45], [0.25, 0.24, 0.26])


def resnet18_counts(width: int, n_classes: int, size: int = 32) -> tuple[int, int]:
    """(parameters, forward MACs per example) of the CIFAR ResNet-18, from its layer shapes alone."""
    params = 3 * width * 9 + 2 * width  # stem conv, its BN (weight, bias)
    macs = size * size * 3 * width * 9
    c_in, hw = width, size
    for stage, mult in enumerate((1, 2, 4, 8)):
        c = mult * width
        if stage:
            hw //= 2
        for block in range(2):
            first_in = c_in if block == 0 else c
            params += first_in * c * 9 + 2 * c + c * c * 9 + 2 * c  # conv1 + BN, conv2 + BN
            macs += hw * hw * 9 * (first_in * c + c * c)
            if block == 0 and first_in != c:  # 1x1 shortcut + BN
                params += first_in * c + 2 * c
                macs += hw * hw * first_in * c
        c_in = c
    params += 8 * width * n_classes + n_classes  # head
    macs += 8 * width * n_classes
    return params, macs


@pytest.mark.parametrize("n_classes, published", [(10, 11_173_962), (100, 11_220_132)])
def test_parameter_count_is_resnet18s(n_classes, published):
    model = ResNet18(3, n_classes, 64, NORM)
    counted = sum(p.numel() for p in model.parameters())
    assert counted == resnet18_counts(64, n_classes)[0] == published
    assert {n for n, _ in model.named_buffers()} >= {"input_norm.mean", "input_norm.std"}  # not parameters


def test_forward_flops_are_twice_the_macs_of_the_layer_shapes():
    model = ResNet18(3, 10, 64, NORM)
    with FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, 32, 32))
    _, macs = resnet18_counts(64, 10)
    assert counter.get_total_flops() == 2 * macs == 1_110_845_440
    assert abs(macs / 0.556e9 - 1) < 0.005  # the figure the literature quotes: 0.56 G
    assert sum(dense_forward_flops(model, (3, 32, 32), "cpu").values()) == 2 * macs
    _, macs64 = resnet18_counts(64, 200, size=64)  # Tiny-ImageNet: 4x the convs' work
    with FlopCounterMode(display=False) as counter:
        ResNet18(3, 200, 64, NORM)(torch.zeros(1, 3, 64, 64))
    assert counter.get_total_flops() == 2 * macs64


def test_prunable_is_exactly_the_sixteen_3x3_convs_of_the_stages():
    model = ResNet18(3, 10, 16, NORM)
    named = dict(model.named_parameters())
    prunable = model.prunable()
    assert len(prunable) == len(set(prunable)) == 16
    stage_3x3 = {n for n, p in named.items() if n.startswith("stage") and p.dim() == 4 and p.shape[-2:] == (3, 3)}
    assert set(prunable) == stage_3x3
    assert not [n for n in prunable if "shortcut" in n or n.startswith(("stem", "head"))]
    assert any("shortcut" in n for n in named) and named["stem.0.weight"].shape == (16, 3, 3, 3)


def test_features_and_logits_on_uint8_images_of_both_sizes():
    model = ResNet18(3, 10, 8, NORM).eval()
    for size in (32, 64):
        x = torch.randint(0, 256, (5, 3, size, size), dtype=torch.uint8)
        assert model.features(x).shape == (5, 64) and model(x).shape == (5, 10)
        assert torch.allclose(model(x), model(x.float()), atol=1e-5)  # uint8 or float pixels: the same


def test_input_norm_maps_pixels_to_normalised_floats():
    norm = InputNorm(*NORM)
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = torch.tensor(NORM[0]).view(1, 3, 1, 1), torch.tensor(NORM[1]).view(1, 3, 1, 1)
    assert torch.allclose(norm(x), (x.float() / 255 - mean) / std)
    assert not list(norm.parameters()) and norm(x).dtype == torch.float32
    norm.channels_last = True
    assert norm(x).is_contiguous(memory_format=torch.channels_last)


def test_build_model_registers_resnet18_with_its_width():
    model = build_model("resnet18", (3, 32, 32), 100, 32, NORM)
    assert isinstance(model, ResNet18) and model.head.in_features == 256 and model.head.out_features == 100
    assert isinstance(build_model("resnet18", (3, 32, 32), 10, 8).input_norm, nn.Identity)


def test_flop_meter_counts_resnet_forwards_from_the_stem():
    model = ResNet18(3, 10, 8, NORM)
    meter = FlopMeter(model, (3, 32, 32), "cpu")
    assert next(iter(meter.by_module)) == "stem.0"  # InputNorm does no counted work
    meter.track(model.prunable())
    with meter.phase("probe"), torch.no_grad():
        model(torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8))
    assert meter.snapshot()["probe.forward"] == 4 * meter.dense_forward == 4 * 2 * resnet18_counts(8, 10)[1]
