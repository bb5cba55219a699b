"""Channel padding (gpunet.deploy.padding): wider convolutions with zero weights compute exactly what the fused
model computes, for all seven models, any input size, both memory formats."""

from __future__ import annotations

import copy

import pytest
import torch
from _helpers import calibrate_bn, rel_err, within_fp32_rounding
from test_deploy import SIZES
from torch import nn

import gpunet
from gpunet.blocks import ConvBnAct
from gpunet.deploy.optimize import optimize_for_inference
from gpunet.deploy.padding import pad_channels, padded_conv, round_up
from gpunet.errors import SettingError

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _fused(name: str, seed: int = 0) -> nn.Module:
    """Fused, with BatchNorm statistics measured on images: logits that depend on the input."""
    torch.manual_seed(seed)
    return calibrate_bn(gpunet.create_model(name), SIZES[name], seed).fuse()


@pytest.fixture(scope="module")
def fused_and_padded() -> dict[str, tuple[nn.Module, nn.Module]]:
    models = {}
    for name in SIZES:
        fused = _fused(name)
        models[name] = (fused, pad_channels(copy.deepcopy(fused), 8))
    return models


@pytest.mark.parametrize("name", sorted(SIZES))
def test_padded_equals_fused(fused_and_padded: dict[str, tuple[nn.Module, nn.Module]], name: str) -> None:
    """fp32: the same logits up to the order of fp32 sums (as close to the float64 model as the fused model is),
    at two sizes, NCHW and channels_last; bit-identical where there is nothing to pad."""
    fused, padded = fused_and_padded[name]
    exact = copy.deepcopy(fused).double()
    for size in (SIZES[name], SIZES[name] + 13):
        x = torch.randn(2, 3, size, size)
        with torch.inference_mode():
            ref, truth = fused(x), exact(x.double())
            assert rel_err(ref[0] - ref[1], ref) > 0.1  # a live signal: the comparison can fail
            for fmt in (torch.contiguous_format, torch.channels_last):
                got = copy.deepcopy(padded).to(memory_format=fmt)(x.contiguous(memory_format=fmt))
                assert got.shape == ref.shape == (2, 1000)
                assert within_fp32_rounding(got, ref, truth), (name, size, fmt, rel_err(got, ref))
                if fmt == torch.contiguous_format and not _has_odd_widths(fused):
                    assert torch.equal(got, ref)  # nothing to pad: the very same computation


def _has_odd_widths(model: nn.Module) -> bool:
    return any(c % 8 for m in model.modules() if isinstance(m, nn.Conv2d) and m.in_channels != 3
               for c in (m.in_channels, m.out_channels))


@pytest.mark.parametrize("name", ["gpunet_d1", "gpunet_0"])
def test_padded_equals_fused_in_float64(fused_and_padded: dict[str, tuple[nn.Module, nn.Module]], name: str) -> None:
    """In float64 the only difference (summation order) is ~1e-16: any leak of a padded channel would show."""
    fused, padded = (copy.deepcopy(m).double() for m in fused_and_padded[name])
    x = torch.randn(2, 3, 57, 57, dtype=torch.float64)
    with torch.inference_mode():
        assert rel_err(padded(x), fused(x)) <= 1e-12
        assert rel_err(padded.forward_features(x), fused.forward_features(x)) <= 1e-12


def test_d1_channels_become_multiples_of_8(fused_and_padded: dict[str, tuple[nn.Module, nn.Module]]) -> None:
    fused, padded = fused_and_padded["gpunet_d1"]
    odd = sorted({c for m in fused.modules() if isinstance(m, nn.Conv2d) for c in (m.in_channels, m.out_channels)
                  if c % 8})
    assert {33, 44, 67, 134, 190, 268} <= set(odd)  # the list: there is something to pad
    convs = [m for m in padded.modules() if isinstance(m, nn.Conv2d)]
    stem_in = padded.stem[0].conv
    for conv in convs:
        assert conv.out_channels % 8 == 0, conv
        assert conv is stem_in or conv.in_channels % 8 == 0, conv  # the image keeps its 3 channels
        if conv.groups > 1:
            assert conv.groups == conv.in_channels == conv.out_channels  # depthwise stays depthwise
    assert stem_in.in_channels == 3
    assert padded.head.conv.out_channels == fused.head.conv.out_channels == padded.num_features
    assert padded.classifier.out_features == 1000


def test_padded_channels_hold_exact_zeros(fused_and_padded: dict[str, tuple[nn.Module, nn.Module]]) -> None:
    """Every conv-bn-act output of the padded D1: the real channels as before, the extra channels exactly 0."""
    fused, padded = fused_and_padded["gpunet_d1"]
    outputs: dict[str, dict[str, torch.Tensor]] = {"fused": {}, "padded": {}}
    hooks = []
    for label, model in (("fused", fused), ("padded", padded)):
        for name, m in model.named_modules():
            if isinstance(m, ConvBnAct):
                hooks.append(m.register_forward_hook(
                    lambda mod, inp, out, name=name, label=label: outputs[label].__setitem__(name, out.clone())))
    x = torch.randn(1, 3, 64, 64)
    try:
        with torch.inference_mode():
            fused(x), padded(x)
    finally:
        for h in hooks:
            h.remove()
    assert outputs["fused"].keys() == outputs["padded"].keys() and len(outputs["fused"]) > 50
    widened = 0
    for name, ref in outputs["fused"].items():
        got = outputs["padded"][name]
        real = ref.shape[1]
        widened += got.shape[1] > real
        assert torch.count_nonzero(got[:, real:]) == 0, name
        assert rel_err(got[:, :real], ref) <= 1e-5, name
    assert widened > 20


def test_padded_weights_are_zero_beyond_the_real_ones() -> None:
    conv = nn.Conv2d(5, 7, 3, padding=1)
    dw = nn.Conv2d(7, 7, 3, padding=1, groups=7)
    wide, wide_dw = padded_conv(conv, 8, 16), padded_conv(dw, 8, 8)
    assert wide.weight.shape == (16, 8, 3, 3) and wide_dw.groups == 8 and wide_dw.weight.shape == (8, 1, 3, 3)
    assert torch.equal(wide.weight[:7, :5], conv.weight) and torch.equal(wide.bias[:7], conv.bias)
    assert torch.count_nonzero(wide.weight[7:]) == torch.count_nonzero(wide.weight[:, 5:]) == 0
    assert torch.count_nonzero(wide.bias[7:]) == 0 and torch.count_nonzero(wide_dw.weight[7:]) == 0
    x = torch.randn(1, 8, 6, 6)
    x[:, 5:] = 0
    with torch.no_grad():
        assert torch.allclose(wide(x)[:, :7], conv(x[:, :5]), rtol=0, atol=1e-6)
    assert round_up(33, 8) == 40 and round_up(40, 8) == 40 and round_up(1, 8) == 8


def test_padding_refuses_what_it_cannot_keep_exact() -> None:
    with pytest.raises(SettingError, match="GPUNet classifier"):
        pad_channels(gpunet.create_model("gpunet_d1", features_only=True))
    for bad in (0, -8, 2.5, True):
        with pytest.raises(SettingError, match="channel multiple"):
            pad_channels(gpunet.create_model("gpunet_0"), bad)  # type: ignore[arg-type]
    with pytest.raises(SettingError, match="grouped"):
        padded_conv(nn.Conv2d(8, 16, 1, groups=2), 8, 16)
    pruned = gpunet.create_model("gpunet_0")
    pruned.prune_intermediate_layers(2)
    with pytest.raises(SettingError, match="head conv"):
        pad_channels(pruned)


def test_optimize_for_inference_pads() -> None:
    fused = _fused("gpunet_d1", seed=3)
    x = torch.randn(1, 3, 80, 80).contiguous(memory_format=torch.channels_last)
    with torch.inference_mode():
        ref, truth = fused(x), copy.deepcopy(fused).double()(x.double())
        fast = optimize_for_inference(copy.deepcopy(fused), pad_channels=8)
        assert fast.stages[0][0].pw.conv.out_channels % 8 == 0
        assert within_fp32_rounding(fast(x), ref, truth)
        half = optimize_for_inference(copy.deepcopy(fused), pad_channels=8, precision="bf16")
        low = half(x.to(torch.bfloat16)).float()
    assert torch.nn.functional.cosine_similarity(low.flatten(), ref.flatten(), dim=0) > 0.99
