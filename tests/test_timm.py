"""GPUNet as a timm model: the contract timm's generic model tests check, checked here directly (at the
models' native resolutions too, which timm skips above 448 px), NVIDIA's weights through gpunet's download
path from timm, in-channel adaptation, timm's data, optimizer and feature tools."""

from __future__ import annotations

import copy
import fnmatch
from pathlib import Path

import pytest
import timm
import torch
from _helpers import rgb_array, save_zoo_mirror
from _servers import file_server
from PIL import Image
from timm.data import create_transform, resolve_model_data_config
from timm.models import get_pretrained_cfg, load_pretrained
from timm.models._manipulate import group_parameters
from timm.optim import create_optimizer_v2
from torch import nn

import gpunet
from gpunet import hub, zoo
from gpunet.builder import layer_geometry
from gpunet.errors import SettingError
from gpunet.model import FIRST_CONV, GPUNet, GPUNetFeatures

MODELS = gpunet.list_models()
DISTILLED = ("gpunet_d1", "gpunet_d2")

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _x(n: int = 1, res: int = 64, chans: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, chans, res, res, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------------- registry and pretrained cfgs

def test_registered_pretrained_cfgs_send_timm_nowhere() -> None:
    tagged = {f"{n}.nv_in1k" for n in MODELS}
    assert set(timm.list_pretrained("gpunet*")) == tagged
    assert tagged <= set(timm.list_models(pretrained=True))
    for name in MODELS:
        cfg, ours = get_pretrained_cfg(name), gpunet.get_pretrained_config(name)
        assert get_pretrained_cfg(f"{name}.nv_in1k") == cfg
        assert (cfg.architecture, cfg.tag) == (name, "nv_in1k")
        assert cfg.url is None and cfg.hf_hub_id is None and cfg.state_dict is None  # nothing timm could fetch
        assert cfg.custom_load and Path(cfg.file).name == ours.filename and Path(cfg.file).parent.name == "checkpoints"
        assert (cfg.input_size, cfg.crop_pct, cfg.interpolation) == (ours.input_size, ours.crop_pct, ours.interpolation)
        assert (tuple(cfg.mean), tuple(cfg.std), cfg.num_classes) == (ours.mean, ours.std, 1000)
        assert (cfg.first_conv, cfg.classifier, cfg.pool_size) == (FIRST_CONV, "classifier", ours.pool_size)
        assert cfg.origin_url == ours.card_url and cfg.paper_ids == "arXiv:2205.00841"


@pytest.mark.parametrize("name", MODELS)
def test_timm_and_gpunet_models_carry_the_same_cfg(name: str) -> None:
    t, g = timm.create_model(name), gpunet.create_model(name)
    assert t.default_cfg is t.pretrained_cfg and g.default_cfg is g.pretrained_cfg
    assert _without_file(t.pretrained_cfg) == _without_file(g.pretrained_cfg)
    assert t.pretrained_cfg["name"] == name and "url" not in t.pretrained_cfg
    assert t.state_dict().keys() == g.state_dict().keys()
    tf, gf = timm.create_model(name, features_only=True), gpunet.create_model(name, features_only=True)
    assert _without_file(tf.pretrained_cfg) == _without_file(gf.pretrained_cfg)
    assert "num_classes" not in tf.pretrained_cfg and "classifier" not in gf.pretrained_cfg


def _without_file(cfg: dict) -> dict:
    return {k: v for k, v in cfg.items() if k != "file"}  # where the cache was when timm registered the models


# ---------------------------------------------------------------------------- timm's default-cfg checks, every size

def _default_cfg_checks(name: str) -> None:
    """timm's test_model_default_cfgs at the model's native input size (timm skips this above 448 px)."""
    with torch.device("meta"):
        model = timm.create_model(name, device="meta", dtype=torch.float32).eval()
        cfg = model.default_cfg
        x = torch.randn(1, *cfg["input_size"])
        assert model.in_chans == cfg["input_size"][0] and model.num_classes == 1000
        features = model.forward_features(x)
        pre = model.forward_head(features, pre_logits=True)
        assert features.shape[1:] == (model.num_features, *cfg["pool_size"])
        assert pre.shape == (1, model.head_hidden_size)
        model.reset_classifier(0)
        assert model(x).shape == pre.shape
        model.reset_classifier(0, "")
        assert model(x).shape[-2:] == cfg["pool_size"]
        assert timm.create_model(name, num_classes=0, device="meta").eval()(x).shape == pre.shape
        unpooled = timm.create_model(name, num_classes=0, global_pool="", device="meta").eval()(x)
        assert unpooled.dim() == 4 and unpooled.shape[-2:] == cfg["pool_size"]
    names = model.state_dict().keys()
    assert f"{cfg['first_conv']}.weight" in names
    assert f"{cfg['classifier']}.weight" in gpunet.create_model(name).state_dict()
    groups = group_parameters(model, model.group_matcher(coarse=False), reverse=True)
    assert len(set(groups.values())) > 1
    assert all(any(fnmatch.fnmatch(n, p) for n in names) for p in model.no_weight_decay())


@pytest.mark.parametrize("name", MODELS)
def test_timm_default_cfg_contract_at_native_resolution(name: str) -> None:
    _default_cfg_checks(name)


@pytest.mark.parametrize(("name", "features", "hidden"), [
    ("gpunet_0", 1280, 1280), ("gpunet_p1", 1984, 1984), ("gpunet_d1", 1152, 1984), ("gpunet_d2", 1152, 1984)])
def test_num_features_is_the_feature_map_width(name: str, features: int, hidden: int) -> None:
    model = timm.create_model(name).eval()
    assert (model.num_features, model.head_hidden_size) == (features, hidden)
    assert model.get_classifier().in_features == hidden
    with torch.no_grad():
        assert model.forward_features(_x()).shape[1] == features


def test_factory_errors_are_timms() -> None:
    with pytest.raises(TypeError):
        timm.create_model("gpunet_0", not_a_model_arg=1)
    with pytest.raises(SettingError, match="global_pool"):
        timm.create_model("gpunet_0", global_pool="max")
    model = timm.create_model("gpunet_0", device="meta", dtype=torch.float64)
    assert {p.device.type for p in model.parameters()} == {"meta"} and next(model.parameters()).dtype == torch.float64
    model.reset_classifier(7)  # the new classifier follows the model's device and dtype, and its mode
    assert model.classifier.weight.device.type == "meta" and model.classifier.weight.dtype == torch.float64


# ---------------------------------------------------------------------------- pooling

def test_global_pool_none_classifies_every_position() -> None:
    pooled = gpunet.create_model("gpunet_0")
    unpooled = copy.deepcopy(pooled)
    unpooled.reset_classifier(1000, "")
    pooled.reset_classifier(1000)  # keeps "avg"
    unpooled.classifier.load_state_dict(pooled.classifier.state_dict())
    x = _x(2)
    with torch.no_grad():
        dense = unpooled.eval()(x)
        assert dense.shape[:2] == (2, 1000) and dense.dim() == 4
        # a linear classifier commutes with averaging: the mean of per-position logits is the pooled logit
        torch.testing.assert_close(dense.mean((2, 3)), pooled.eval()(x), rtol=1e-5, atol=1e-5)
    assert unpooled.global_pool == "" and pooled.global_pool == "avg"


# ---------------------------------------------------------------------------- pretrained through gpunet's path

@pytest.fixture
def d1_mirror(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A loopback NGC mirror holding GPUNet-D1 and GPUNet-0 zips (random weights); GPUNET_HOME in tmp_path."""
    torch.manual_seed(0)
    sources = {name: gpunet.create_model(name) for name in ("gpunet_d1", "gpunet_0")}
    files = {}
    for name, model in sources.items():
        path = save_zoo_mirror(model, name, tmp_path / "mirror")
        files[path.name] = path.read_bytes()
    monkeypatch.setenv("GPUNET_HOME", str(tmp_path / "home"))
    with file_server(files) as server:
        monkeypatch.setenv("GPUNET_NGC_MIRROR", server.base_url)
        yield server, sources


def _assert_same_weights(model: nn.Module, source: nn.Module, skip: tuple[str, ...] = ()) -> None:
    got, want = model.state_dict(), source.state_dict()
    assert got.keys() == want.keys()
    for k in want:
        if k not in skip:
            assert torch.equal(got[k], want[k]), k


def test_timm_pretrained_downloads_through_gpunet(d1_mirror, tmp_path: Path) -> None:
    server, sources = d1_mirror
    filename = gpunet.get_pretrained_config("gpunet_d1").filename
    model = timm.create_model("gpunet_d1", pretrained=True)
    _assert_same_weights(model, sources["gpunet_d1"])
    cached = hub.checkpoint_dir() / filename
    assert cached.is_file() and cached.with_name(filename + ".sha256").is_file()  # gpunet's verified cache
    assert len(server.requests_for(filename)) == 1
    again = timm.create_model("gpunet_d1.nv_in1k", pretrained=True, num_classes=10)  # from the cache
    assert len(server.requests_for(filename)) == 1 and again.num_classes == 10
    _assert_same_weights(again.stem, sources["gpunet_d1"].stem)
    # timm's own loader, given this cfg, neither fetches nor reads the zip (custom_load): the model says how
    fresh = timm.create_model("gpunet_d1")
    with pytest.raises(SettingError, match="load through gpunet"):
        load_pretrained(fresh, pretrained_cfg={**fresh.pretrained_cfg, "file": str(cached)})
    assert len(server.requests) == 1
    gpunet.load_weights(fresh, cached)
    _assert_same_weights(fresh, sources["gpunet_d1"])


def test_pretrained_cfg_overlay_is_honoured(d1_mirror, tmp_path: Path) -> None:
    server, sources = d1_mirror
    own = tmp_path / "mine.pth"
    torch.save(sources["gpunet_0"].state_dict(), own)
    model = timm.create_model("gpunet_0", pretrained=True, pretrained_cfg_overlay={"file": str(own),
                                                                                  "input_size": (3, 288, 288)})
    _assert_same_weights(model, sources["gpunet_0"])
    assert not server.requests  # the overlay's file, not the zoo's download
    assert model.pretrained_cfg["input_size"] == (3, 288, 288) and model.pretrained_cfg["file"] == str(own)
    assert resolve_model_data_config(model)["input_size"] == (3, 288, 288)
    assert gpunet.eval_transform(model)(Image.new("RGB", (400, 300))).shape == (3, 288, 288)


@pytest.mark.parametrize("in_chans", [1, 4])
def test_pretrained_stem_adapted_to_other_channels(d1_mirror, in_chans: int) -> None:
    _, sources = d1_mirror
    rgb = sources["gpunet_0"].eval()
    model = timm.create_model("gpunet_0", pretrained=True, in_chans=in_chans).eval()
    stem = rgb.stem[0].conv.weight
    # timm's rule (adapt_input_conv): 1 channel sums RGB; more repeat RGB and rescale by 3 / in_chans
    expected = stem.sum(1, keepdim=True) if in_chans == 1 else stem.repeat(1, 2, 1, 1)[:, :in_chans] * 3 / in_chans
    torch.testing.assert_close(model.stem[0].conv.weight, expected, rtol=0, atol=0)
    _assert_same_weights(model, rgb, skip=(FIRST_CONV + ".weight",))
    assert model.in_chans == in_chans and model.pretrained_cfg["input_size"][0] == 3  # the source's channels
    if in_chans == 1:  # a gray image through the adapted stem = the same image as RGB through NVIDIA's
        gray = _x(2, chans=1)
        with torch.no_grad():
            torch.testing.assert_close(model(gray), rgb(gray.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)
    features = timm.create_model("gpunet_0", pretrained=True, in_chans=in_chans, features_only=True)
    torch.testing.assert_close(features.stem[0].conv.weight, expected, rtol=0, atol=0)


# ---------------------------------------------------------------------------- scripting and tracing

@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_d1"])
def test_torchscript_directly_and_through_fx(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _x()
    with torch.no_grad():
        expected = model(x)
        torch.testing.assert_close(torch.jit.script(model)(x), expected, rtol=1e-5, atol=1e-5)
        traced = torch.fx.symbolic_trace(model)
        torch.testing.assert_close(torch.jit.script(traced)(x), expected, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------------------- intermediates and feature wrappers

def _stage_outputs(model: GPUNet, x: torch.Tensor) -> list[torch.Tensor]:
    outs: list[torch.Tensor] = []
    hooks = [stage.register_forward_hook(lambda _m, _i, o: outs.append(o)) for stage in model.stages]
    with torch.no_grad():
        model.forward_features(x)
    for h in hooks:
        h.remove()
    return outs


@pytest.mark.parametrize("name", MODELS)
def test_forward_intermediates(name: str) -> None:
    model = timm.create_model(name).eval()
    x = _x(res=96)
    stages = _stage_outputs(model, x)
    n = len(model.feature_info)
    assert [s.shape[1] for s in stages] == [f["num_chs"] for f in model.feature_info]
    with torch.no_grad():
        final, inter = model.forward_intermediates(x)
        assert torch.equal(final, model.forward_features(x)) and len(inter) == n
        assert all(torch.equal(a, b) for a, b in zip(inter, stages, strict=True))
        last2 = model.forward_intermediates(x, indices=2, intermediates_only=True)
        assert all(torch.equal(a, b) for a, b in zip(last2, stages[-2:], strict=True))
        (first,) = model.forward_intermediates(x, indices=[0], stop_early=True, intermediates_only=True)
        assert torch.equal(first, stages[0])
    pruned = copy.deepcopy(model)
    assert pruned.prune_intermediate_layers([-2]) == [n - 2]
    with torch.no_grad():
        assert torch.equal(pruned.forward_features(x), stages[-2]) and pruned.num_features == stages[-2].shape[1]
    with pytest.raises(SettingError, match="NCHW"):
        model.forward_intermediates(x, output_fmt="NHWC")


@pytest.mark.parametrize("feature_cls", ["list", "dict", "hook", "fx", "getter"])
def test_features_only_with_every_feature_cls(feature_cls: str) -> None:
    torch.manual_seed(0)
    ours = timm.create_model("gpunet_1", features_only=True).eval()  # gpunet's backbone (GPUNetFeatures)
    torch.manual_seed(0)
    wrapped = timm.create_model("gpunet_1", features_only=True, feature_cls=feature_cls).eval()
    assert isinstance(ours, GPUNetFeatures) and not isinstance(wrapped, GPUNetFeatures)
    assert wrapped.feature_info.channels() == ours.feature_info.channels()
    assert wrapped.feature_info.reduction() == ours.feature_info.reduction()
    assert "num_classes" not in wrapped.pretrained_cfg and wrapped.pretrained_cfg["name"] == "gpunet_1"
    x = _x(res=96)
    with torch.no_grad():
        got = wrapped(x)
        got = list(got.values()) if isinstance(got, dict) else got
        assert all(torch.equal(a, b) for a, b in zip(got, ours(x), strict=True))


# ---------------------------------------------------------------------------- timm's data and optimizer tools

@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_p0", "gpunet_d1"])
def test_timm_data_config_and_transform_equal_gpunets(name: str) -> None:
    model = timm.create_model(name)
    image = Image.fromarray(rgb_array(421, 317, 3))
    cfg = resolve_model_data_config(model)
    assert cfg["input_size"] == gpunet.get_pretrained_config(name).input_size
    assert torch.equal(create_transform(**cfg)(image), gpunet.eval_transform(model)(image))


def test_layer_decay_groups_each_block() -> None:
    model = timm.create_model("gpunet_1")
    opt = create_optimizer_v2(model, "sgd", lr=1.0, weight_decay=1e-5, layer_decay=0.75)
    scale = {id(p): g["lr_scale"] for g in opt.param_groups for p in g["params"]}
    by_name = {n: scale[id(p)] for n, p in model.named_parameters()}
    blocks = [f"stages.{i}.{j}." for i, stage in enumerate(model.stages) for j in range(len(stage))]
    per_block = [{v for n, v in by_name.items() if n.startswith(b)} for b in blocks]
    assert all(len(s) == 1 for s in per_block)  # one group per block, as timm's EfficientNet
    ladder = [by_name["stem.0.conv.weight"], *(s.pop() for s in per_block), by_name["classifier.weight"]]
    layers = len(ladder)
    assert ladder == pytest.approx([0.75 ** (layers - 1 - i) for i in range(layers)])
    assert by_name["head.conv.weight"] == ladder[-2]  # the head joins the last block, as conv_head does
    decayed = {id(p) for g in opt.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    assert {n for n, p in model.named_parameters() if id(p) in decayed} == {
        n for n, p in model.named_parameters() if p.ndim > 1}  # biases and BatchNorm: no weight decay


@pytest.mark.parametrize("name", MODELS)
def test_zoo_data_for_timm_matches_the_model(name: str) -> None:
    """The torch-free facts the timm cfgs are made of (registration may run while the model modules import)."""
    assert zoo.FIRST_CONV == FIRST_CONV
    geometry = layer_geometry(gpunet.get_architecture(name))
    assert gpunet.get_pretrained_config(name).pool_size == (geometry[-1].in_resolution,) * 2
