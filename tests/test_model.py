"""The model: forward at any size, feature extraction, timm's interface, drop rates, dtypes and layouts."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import DropPath
from torch import nn

import gpunet
from gpunet import builder
from gpunet.blocks import _Residual
from gpunet.errors import SettingError
from gpunet.model import GPUNet, GPUNetFeatures
from gpunet.weights import WeightsError, save_safetensors_checkpoint

MODEL_NAMES = ("gpunet_0", "gpunet_1", "gpunet_2", "gpunet_p0", "gpunet_p1", "gpunet_d1", "gpunet_d2")

DISTILLED = ("gpunet_d1", "gpunet_d2")


pytestmark = pytest.mark.usefixtures("single_thread_torch")

def realistic_weights(model: nn.Module, seed: int = 0) -> nn.Module:
    """He-initialised convs (last conv of each block halved) and non-trivial BatchNorm statistics,
    so that activations keep a realistic scale through the whole network (like golden/weights.py)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                std = math.sqrt(2.0 / m.weight[0].numel()) * (0.5 if name.endswith("pwl.conv") else 1.0)
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * std)
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.01)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) * 0.4 + 0.8)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.05)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.05)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 0.4 + 0.8)
    return model


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    assert got.shape == ref.shape
    return float((got.float() - ref.float()).abs().max() / ref.float().abs().max())


def _input(n: int, res: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- forward

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_forward_small_odd_sizes(name: str) -> None:
    model = gpunet.create_model(name)
    with torch.no_grad():
        y97 = model(_input(1, 97))
        y64 = model(_input(2, 64))
    assert y97.shape == (1, 1000) and y64.shape == (2, 1000)
    assert torch.isfinite(y97).all() and torch.isfinite(y64).all()


@pytest.mark.parametrize(("name", "res", "index", "size"), [
    ("gpunet_0", 320, 1, 79),  # fused k3 stride 2 with VALID padding: 160 -> 79 (not 80)
    ("gpunet_0", 320, 2, 39),  # and again: 79 -> 39
    ("gpunet_1", 288, 1, 71),  # 144 -> 71
    ("gpunet_2", 384, 1, 94),  # fused k5: 192 -> 94
    ("gpunet_2", 384, 2, 46),  # 94 -> 46
])
def test_fused_stride2_has_no_padding(name: str, res: int, index: int, size: int) -> None:
    feats = gpunet.create_model(name, features_only=True, out_indices=(index,))
    with torch.no_grad():
        (out,) = feats(torch.zeros(1, 3, res, res))
    assert out.shape[-2:] == (size, size)
    assert out.shape[1] == feats.feature_info.channels()[0]


def test_fused_stride2_no_padding_via_hooks() -> None:
    model = gpunet.create_model("gpunet_0")
    sizes: dict[str, tuple[int, ...]] = {}
    handles = [m.register_forward_hook(lambda mod, i, o, n=n: sizes.__setitem__(n, tuple(o.shape)))
               for n, m in model.named_children() if n in ("stem", "stages")]
    handles += [s.register_forward_hook(lambda mod, i, o, n=n: sizes.__setitem__(f"stage{n}", tuple(o.shape)))
                for n, s in enumerate(model.stages)]
    with torch.no_grad():
        model(torch.zeros(1, 3, 320, 320))
    for h in handles:
        h.remove()
    assert sizes["stem"] == (1, 32, 160, 160)
    assert sizes["stage0"] == (1, 32, 160, 160)
    assert sizes["stage1"] == (1, 32, 79, 79)
    assert sizes["stage2"] == (1, 64, 39, 39)
    assert sizes["stage3"] == (1, 256, 20, 20)  # irb stride 2 is padded: 39 -> 20
    assert sizes["stage4"] == (1, 704, 10, 10)


def test_stride1_fused_keeps_size() -> None:
    arch = gpunet.get_architecture("gpunet_0")
    stage = GPUNet(arch).eval().stages[1]  # two fused blocks: stride 2 (VALID), then stride 1 ('same')
    assert stage[0].exp.conv.padding == (0, 0) and stage[1].exp.conv.padding == (1, 1)
    with torch.no_grad():
        assert stage[1](torch.zeros(1, 32, 17, 17)).shape == (1, 32, 17, 17)


# ---------------------------------------------------------------------------- features_only

@pytest.mark.parametrize(("name", "expected"), [
    ("gpunet_0", (0, 1, 2, 3, 4)),
    ("gpunet_1", (0, 1, 2, 4, 5)),  # two stages at stride 16: the later one
    ("gpunet_2", (0, 1, 2, 4, 6)),
    ("gpunet_p0", (0, 1, 2, 3, 4, 5)),  # P0/P1 reach stride 64
    ("gpunet_d1", (0, 1, 2, 3, 4)),
    ("gpunet_d2", (0, 1, 2, 3, 4)),
])
def test_features_default_out_indices(name: str, expected: tuple[int, ...]) -> None:
    feats = gpunet.create_model(name, features_only=True)
    assert isinstance(feats, GPUNetFeatures) and not feats.training
    assert feats.out_indices == expected
    reductions = feats.feature_info.reduction()
    assert reductions == sorted(set(reductions))  # one feature per output stride
    full = GPUNet(gpunet.get_architecture(name)).feature_info
    assert feats.feature_info.channels() == [full[i]["num_chs"] for i in expected]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_features_match_feature_info(name: str) -> None:
    classifier = GPUNet(gpunet.get_architecture(name))
    n = len(classifier.feature_info)
    feats = gpunet.create_model(name, features_only=True, out_indices=tuple(range(n)))
    res = 64
    with torch.no_grad():
        outs = feats(_input(1, res))
    assert len(outs) == n
    info = feats.feature_info
    assert info.channels() == [f["num_chs"] for f in classifier.feature_info]
    assert info.reduction() == [f["reduction"] for f in classifier.feature_info]
    expected_sizes = _spec_stage_sizes(gpunet.get_architecture(name), res)
    for out, chs, size in zip(outs, info.channels(), expected_sizes, strict=True):
        assert tuple(out.shape) == (1, chs, size, size)
    for size, red in zip(expected_sizes, info.reduction(), strict=True):
        if name in DISTILLED:  # all 'same'-style padding: exactly ceil(res / reduction)
            assert size == math.ceil(res / red)
        else:  # VALID fused stride-2 blocks only ever lose pixels
            assert size <= math.ceil(res / red)


def _spec_stage_sizes(arch: gpunet.Architecture, res: int) -> list[int]:
    """Spatial size after each stage, from the README's padding rules (independent of the builder)."""
    h = (res + 2 - 3) // 2 + 1  # stem: 3x3 stride 2 pad 1
    sizes: list[int] = []
    blocks = arch.blocks
    for j, b in enumerate(blocks):
        k, s = b.kernel_size, b.stride
        if b.layer_type == "fused_irb" and s == 2 and not arch.distill:
            pad = 0  # NVIDIA drops timm's dynamic 'same' padding
        elif b.layer_type == "conv":
            pad = ((s - 1) + (k - 1)) // 2
        else:
            pad = k // 2
        h = (h + 2 * pad - k) // s + 1
        if j + 1 == len(blocks) or blocks[j + 1].stage != b.stage:
            sizes.append(h)
    return sizes


def test_features_custom_and_negative_indices() -> None:
    feats = gpunet.create_model("gpunet_d1", features_only=True, out_indices=(-1, 1))
    assert feats.out_indices == (1, 4)
    assert feats.feature_info.channels() == [44, 268]
    assert feats.feature_info.reduction() == [4, 32]
    with torch.no_grad():
        outs = feats(_input(1, 64))
    assert [tuple(o.shape) for o in outs] == [(1, 44, 16, 16), (1, 268, 2, 2)]
    shallow = gpunet.create_model("gpunet_d1", features_only=True, out_indices=(-5, 0))
    assert shallow.out_indices == (0,)
    assert len(shallow.stages) == 1  # stages after the last requested one are not built
    with torch.no_grad():
        assert [tuple(o.shape) for o in shallow(_input(1, 64))] == [(1, 33, 32, 32)]


def test_features_timm_feature_info_api() -> None:
    feats = gpunet.create_model("gpunet_0", features_only=True, out_indices=(1, 3))
    info = feats.feature_info
    assert info.channels() == [32, 256]
    assert info.reduction() == [4, 16]
    assert info.module_name() == ["stages.1", "stages.3"]
    assert info.channels(0) == 32 and info.reduction(1) == 16
    assert len(info) == 2


@pytest.mark.parametrize("bad", [(5,), (-6,), (0, 99)])
def test_features_out_of_range(bad: tuple[int, ...]) -> None:
    with pytest.raises(ValueError, match="out_indices"):
        gpunet.create_model("gpunet_0", features_only=True, out_indices=bad)


def test_features_empty_out_indices() -> None:
    with pytest.raises(ValueError, match="out_indices"):
        gpunet.create_model("gpunet_0", features_only=True, out_indices=())


def _stage_outputs(model: GPUNet, x: torch.Tensor) -> list[torch.Tensor]:
    outs = []
    with torch.no_grad():
        h = model.stem(x)
        for stage in model.stages:
            h = stage(h)
            outs.append(h)
    return outs


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_d1"])
def test_features_load_classifier_safetensors(tmp_path: Path, name: str) -> None:
    classifier = realistic_weights(gpunet.create_model(name), seed=3)
    path = tmp_path / f"{name}.safetensors"
    save_safetensors_checkpoint(classifier, path)
    feats = gpunet.create_model(name, features_only=True, out_indices=(1, 3), weights=path)
    x = _input(1, 48)
    with torch.no_grad():
        got = feats(x)
    ref = _stage_outputs(classifier, x)
    assert len(got) == 2
    torch.testing.assert_close(got[0], ref[1], rtol=0, atol=0)
    torch.testing.assert_close(got[1], ref[3], rtol=0, atol=0)
    # architecture read from the file's metadata
    feats2 = gpunet.create_model(path, features_only=True)
    with torch.no_grad():
        torch.testing.assert_close(feats2(x)[-1], ref[-1], rtol=0, atol=0)


def test_features_load_bare_state_dict(tmp_path: Path) -> None:
    arch = gpunet.get_architecture("gpunet_p0")
    classifier = realistic_weights(GPUNet(arch), seed=4).eval()
    path = tmp_path / "p0.pth"
    torch.save(classifier.state_dict(), path)
    feats = GPUNetFeatures(arch, out_indices=(2,))
    gpunet.load_weights(feats, path)
    feats.eval()
    x = _input(1, 64)
    with torch.no_grad():
        torch.testing.assert_close(feats(x)[0], _stage_outputs(classifier, x)[2], rtol=0, atol=0)
    # a checkpoint of another model is refused
    other = tmp_path / "p1.pth"
    torch.save(GPUNet(gpunet.get_architecture("gpunet_p1")).state_dict(), other)
    with pytest.raises(WeightsError):
        gpunet.load_weights(GPUNetFeatures(arch, out_indices=(2,)), other)


# ---------------------------------------------------------------------------- timm model interface

@pytest.mark.parametrize(("name", "width", "pre_pool"), [
    ("gpunet_0", 1280, 1280), ("gpunet_d1", 1984, 1152), ("gpunet_p0", 1984, 1984), ("gpunet_d2", 1984, 1152)])
def test_forward_features_and_head(name: str, width: int, pre_pool: int) -> None:
    model = gpunet.create_model(name)
    assert model.num_features == pre_pool and model.head_hidden_size == width  # timm's definitions
    x = _input(2, 48)
    with torch.no_grad():
        f = model.forward_features(x)
        pre = model.forward_head(f, pre_logits=True)
        logits = model.forward_head(f)
        direct = model(x)
    assert f.shape[:2] == (2, pre_pool) and f.dim() == 4
    assert pre.shape == (2, width)
    assert logits.shape == (2, 1000)
    torch.testing.assert_close(direct, logits, rtol=0, atol=0)
    torch.testing.assert_close(model.get_classifier()(pre), logits, rtol=1e-6, atol=1e-6)
    assert isinstance(model.get_classifier(), nn.Linear) and model.get_classifier().in_features == width


def test_reset_classifier() -> None:
    model = gpunet.create_model("gpunet_d1")
    x = _input(2, 48)
    with torch.no_grad():
        pre = model.forward_head(model.forward_features(x), pre_logits=True)
    model.reset_classifier(10)
    assert model.num_classes == 10
    assert model.get_classifier().out_features == 10 and model.get_classifier().in_features == 1984
    with torch.no_grad():
        assert model(x).shape == (2, 10)
    model.reset_classifier(0)
    assert isinstance(model.get_classifier(), nn.Identity) and model.num_classes == 0
    with torch.no_grad():
        torch.testing.assert_close(model(x), pre, rtol=0, atol=0)
    with pytest.raises(SettingError, match="global_pool"):
        model.reset_classifier(5, global_pool="max")


@pytest.mark.parametrize("name", ["gpunet_1", "gpunet_p1", "gpunet_d2"])
def test_num_classes_kwarg(name: str) -> None:
    model = gpunet.create_model(name, num_classes=21)
    assert model.num_classes == 21 and model.get_classifier().out_features == 21
    with torch.no_grad():
        assert model(_input(1, 64)).shape == (1, 21)
    headless = gpunet.create_model(name, num_classes=0)
    with torch.no_grad():
        assert headless(_input(1, 64)).shape == (1, headless.head_hidden_size)


# ---------------------------------------------------------------------------- drop rates

def _train_outputs(model: nn.Module, x: torch.Tensor, seeds: tuple[int, int] = (1, 2)) -> list[torch.Tensor]:
    model.train()
    outs = []
    with torch.no_grad():
        for s in seeds:
            torch.manual_seed(s)
            outs.append(model(x))
    return outs


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_d1"])
def test_drop_rates_in_training(name: str) -> None:
    arch = gpunet.get_architecture(name)
    base = GPUNet(arch, drop_rate=0.0, drop_path_rate=0.0)
    state = copy.deepcopy(base.state_dict())
    x = _input(2, 32)
    # control: without dropout the two training-mode passes agree
    a, b = _train_outputs(base, x)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    for kwargs in ({"drop_rate": 0.5, "drop_path_rate": 0.0}, {"drop_rate": 0.0, "drop_path_rate": 0.5}):
        model = GPUNet(arch, **kwargs)
        model.load_state_dict(state)
        assert model.drop_rate == kwargs["drop_rate"]
        a, b = _train_outputs(model, x)
        assert not torch.equal(a, b), kwargs
        # in eval mode dropout and drop path are off: deterministic and equal to the undropped model
        model.load_state_dict(state)  # training passes updated the BatchNorm running statistics
        base.load_state_dict(state)
        model.eval()
        base.eval()
        with torch.no_grad():
            e1, e2, ref = model(x), model(x), base(x)
        torch.testing.assert_close(e1, e2, rtol=0, atol=0)
        torch.testing.assert_close(e1, ref, rtol=0, atol=0)


def _drop_paths(model: GPUNet) -> list[tuple[int, float]]:
    """(block index, drop_prob) of every DropPath, blocks numbered in JSON order."""
    blocks = [blk for stage in model.stages for blk in stage]
    return [(j, blk.drop_path.drop_prob) for j, blk in enumerate(blocks)
            if isinstance(getattr(blk, "drop_path", None), DropPath)]


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_1", "gpunet_2", "gpunet_p0", "gpunet_p1"])
def test_drop_path_schedule_non_distilled(name: str) -> None:
    arch = gpunet.get_architecture(name)
    n_json = len(arch.to_json())
    schedule = builder.drop_path_schedule(arch, 0.2)
    # JSON entry i (data = 0, head = 1) gets 0.2 * i / (len(json) - 1); blocks are entries 2 .. len-2
    assert schedule == pytest.approx([0.2 * i / (n_json - 1) for i in range(2, n_json - 1)], rel=1e-12)
    assert builder.default_drop_path_rate(arch) == 0.2
    with torch.device("meta"):
        model = GPUNet(arch)
    blocks = [blk for stage in model.stages for blk in stage]
    skips = [j for j, blk in enumerate(blocks) if isinstance(blk, _Residual) and blk.has_skip]
    assert skips, "every released non-distilled model has residual blocks"
    got = _drop_paths(model)
    assert [j for j, _ in got] == skips  # DropPath exactly on the residual blocks
    for j, p in got:
        assert p == pytest.approx(schedule[j], rel=1e-12)
    if skips[-1] == len(blocks) - 1:
        assert got[-1][1] == pytest.approx(0.2 * (n_json - 2) / (n_json - 1))
    with torch.device("meta"):
        assert _drop_paths(GPUNet(arch, drop_path_rate=0.0)) == []
        scaled = _drop_paths(GPUNet(arch, drop_path_rate=0.4))
    assert [p for _, p in scaled] == pytest.approx([2 * p for _, p in got])


@pytest.mark.parametrize("name", DISTILLED)
def test_drop_path_distilled_default_off(name: str) -> None:
    arch = gpunet.get_architecture(name)
    assert builder.default_drop_path_rate(arch) == 0.0
    with torch.device("meta"):
        assert _drop_paths(GPUNet(arch)) == []
        explicit = _drop_paths(GPUNet(arch, drop_path_rate=0.1))
    n_json = len(arch.to_json())
    assert explicit and all(p == pytest.approx(0.1 * (j + 2) / (n_json - 1)) for j, p in explicit)


# ---------------------------------------------------------------------------- dtypes, layouts, batches

@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_d1"])
@pytest.mark.parametrize(("dtype", "tol"), [(torch.bfloat16, 0.08), (torch.float16, 0.02)])
def test_low_precision_forward(name: str, dtype: torch.dtype, tol: float) -> None:
    model = realistic_weights(gpunet.create_model(name), seed=6)
    x = _input(1, 48)  # small: fp16 convolutions are slow on CPU
    with torch.no_grad():
        ref = model(x)
        low = copy.deepcopy(model).to(dtype)
        try:
            y = low(x.to(dtype))
        except RuntimeError as exc:  # pragma: no cover - depends on the torch build
            if dtype is torch.float16 and "Half" in str(exc):
                pytest.skip(f"fp16 convolution not supported on this CPU build: {exc}")
            raise
    assert y.dtype == dtype and y.shape == (1, 1000)
    assert torch.isfinite(y).all()
    assert rel_err(y, ref) <= tol
    assert rel_err(y, ref) > 0  # really computed in low precision


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_p0", "gpunet_d1"])
def test_channels_last_matches(name: str) -> None:
    model = realistic_weights(gpunet.create_model(name), seed=7)
    x = _input(2, 56)
    with torch.no_grad():
        ref = model(x)
        y_input = model(x.contiguous(memory_format=torch.channels_last))
        cl_model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        y_both = cl_model(x.contiguous(memory_format=torch.channels_last))
        y_model = cl_model(x)
    for y in (y_input, y_both, y_model):
        assert rel_err(y, ref) <= 1e-5


@pytest.mark.parametrize("name", ["gpunet_2", "gpunet_d2"])
def test_batch_consistency(name: str) -> None:
    model = realistic_weights(gpunet.create_model(name), seed=8)
    x = _input(3, 48)
    with torch.no_grad():
        y3 = model(x)
        y1 = torch.cat([model(x[i:i + 1]) for i in range(3)])
    assert y3.shape == (3, 1000)
    assert rel_err(y3, y1) <= 1e-5
    assert not torch.allclose(y3[0], y3[1])  # different images, different logits


# ---------------------------------------------------------------------------- timm registration

def test_timm_list_models() -> None:
    assert set(timm.list_models("gpunet*")) == set(MODEL_NAMES)
    assert all(timm.is_model(n) for n in MODEL_NAMES)


def test_timm_create_model() -> None:
    model = timm.create_model("gpunet_d1", num_classes=5)
    assert isinstance(model, GPUNet)
    assert model.arch == gpunet.get_architecture("gpunet_d1")
    model.eval()
    with torch.no_grad():
        assert model(_input(1, 64)).shape == (1, 5)
    dropped = timm.create_model("gpunet_0", drop_rate=0.3, drop_path_rate=0.1)
    assert dropped.drop_rate == 0.3 and dropped.drop_path_rate == 0.1
    gray = timm.create_model("gpunet_0", in_chans=1)
    assert gray.in_chans == 1 and gray.stem[0].conv.in_channels == 1 and gray.arch.head.in_channels == 1
    with pytest.raises(SettingError, match="in_chans"):
        timm.create_model("gpunet_0", in_chans=0)


def test_timm_features_only() -> None:
    feats = timm.create_model("gpunet_0", features_only=True, out_indices=(1, -1))
    assert isinstance(feats, GPUNetFeatures)
    assert feats.feature_info.channels() == [32, 704]
    assert feats.feature_info.reduction() == [4, 32]
    feats.eval()
    with torch.no_grad():
        outs = feats(_input(1, 64))
    assert [o.shape[1] for o in outs] == [32, 704]
    default = timm.create_model("gpunet_p1", features_only=True)
    assert default.feature_info.reduction() == [2, 4, 8, 16, 32, 64]


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"drop_rate": 1.5}, r"drop_rate 1\.5: expected a rate in \[0, 1\)"),  # was: a ValueError in the first train step
    ({"drop_rate": -0.1}, r"drop_rate -0\.1: expected a rate in \[0, 1\)"),
    ({"drop_path_rate": 2.0}, r"drop_path_rate 2\.0: expected a rate"),  # was: bernoulli_ RuntimeError in forward
    ({"drop_path_rate": -1.0}, r"drop_path_rate -1\.0: expected a rate"),  # was: trained silently with it
])
def test_dropout_rates_are_checked_when_the_model_is_made(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(SettingError, match=message):
        gpunet.create_model("gpunet_0", **kwargs)
    with pytest.raises(SettingError, match=message):
        timm.create_model("gpunet_0", **kwargs)
    if "drop_path_rate" in kwargs:
        with pytest.raises(SettingError, match=message):
            gpunet.create_model("gpunet_0", features_only=True, **kwargs)
