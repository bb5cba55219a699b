"""The zoo: architectures, sizes, NVIDIA key mapping, pretrained configs, MACs, create_model."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import gpunet
from gpunet import weights as W
from gpunet import zoo
from gpunet.model import GPUNet

MODEL_NAMES = ("gpunet_0", "gpunet_1", "gpunet_2", "gpunet_p0", "gpunet_p1", "gpunet_d1", "gpunet_d2")

PUBLISHED_TOP1 = {"gpunet_0": 78.9, "gpunet_1": 80.5, "gpunet_2": 82.2, "gpunet_p0": 80.3, "gpunet_p1": 81.1,
                  "gpunet_d1": 82.5, "gpunet_d2": 83.6}
URL_RE = re.compile(r"^https://api\.ngc\.nvidia\.com/v2/models/nvidia/dle/gpunet_(\w+)_pyt_ckpt/versions/"
                    r"21\.12\.0_amp/zip$")


pytestmark = pytest.mark.usefixtures("single_thread_torch")

def _read_listing(shared_reference: Path, name: str) -> list[tuple[str, tuple[int, ...], str]]:
    out = []
    for line in (shared_reference / "state_dict" / f"{name}.tsv").read_text(encoding="utf-8").splitlines():
        if not line:
            continue
        key, shape, dtype = line.split("\t")
        out.append((key, tuple(int(s) for s in shape.split(",")) if shape else (), dtype))
    return out


def _meta_model(name: str) -> GPUNet:
    with torch.device("meta"):
        return GPUNet(gpunet.get_architecture(name))


def test_list_models() -> None:
    assert gpunet.list_models() == list(MODEL_NAMES)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_zoo_architecture_equals_nvidia_json(shared_reference: Path, name: str) -> None:
    assert gpunet.get_architecture(name) == gpunet.load_json(shared_reference / "configs" / f"{name}.json")


def test_zoo_architectures_differ() -> None:
    archs = [gpunet.get_architecture(n) for n in MODEL_NAMES]
    assert all(a != b for i, a in enumerate(archs) for b in archs[i + 1:])


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_parameter_and_tensor_counts(reference_models: dict[str, Any], name: str) -> None:
    facts = reference_models[name]
    model = _meta_model(name)
    sd = model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == facts["num_params"]
    assert len(sd) == facts["num_state_dict_tensors"]
    assert sum(t.numel() for t in sd.values()) == facts["num_state_dict_elements"]


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_nvidia_keys_map_one_to_one(shared_reference: Path, name: str) -> None:
    listing = _read_listing(shared_reference, name)
    dtypes = {"float32": torch.float32, "int64": torch.int64}
    nvidia_sd = {k: torch.empty(shape, dtype=dtypes[dt], device="meta") for k, shape, dt in listing}
    arch = gpunet.get_architecture(name)
    ours = _meta_model(name).state_dict()

    mapped, unknown = W.from_nvidia(nvidia_sd, arch)
    assert unknown == []
    assert len(mapped) == len(nvidia_sd)
    assert set(mapped) == set(ours), (sorted(set(mapped) - set(ours))[:5], sorted(set(ours) - set(mapped))[:5])
    for key, tensor in mapped.items():
        assert tensor.shape == ours[key].shape, key
        assert tensor.dtype == ours[key].dtype, key

    back = W.to_nvidia(mapped, arch)
    assert list(back) == [k for k, _, _ in listing]  # NVIDIA's key order
    assert all(back[k] is nvidia_sd[k] for k in back)
    # our own state dict (in our order) also goes to NVIDIA's order
    assert list(W.to_nvidia(ours, arch)) == [k for k, _, _ in listing]


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_d1"])
def test_foreign_nvidia_keys_are_reported(shared_reference: Path, name: str) -> None:
    other = "gpunet_1" if name == "gpunet_0" else "gpunet_d2"
    listing = _read_listing(shared_reference, other)
    nvidia_sd = {k: torch.empty(s, device="meta") for k, s, _ in listing}
    mapped, unknown = W.from_nvidia(nvidia_sd, gpunet.get_architecture(name))
    ours = _meta_model(name).state_dict()
    bad_shapes = [k for k, v in mapped.items() if k in ours and v.shape != ours[k].shape]
    assert unknown or bad_shapes or set(mapped) != set(ours)


def test_example_key_names() -> None:
    m0 = W.nvidia_module_map(gpunet.get_architecture("gpunet_0"))
    assert "network.head: 2.net.0" in m0 and "network. layer15.net.6" in m0
    m1 = W.nvidia_module_map(gpunet.get_architecture("gpunet_d1"))
    assert "network.stage: 1 irb4.body.0" in m1 and "network.tail:.net.8" in m1
    assert m1["network.tail:.net.8"] == "classifier"


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_pretrained_config(reference_models: dict[str, Any], name: str) -> None:
    facts = reference_models[name]
    cfg = gpunet.get_pretrained_config(name)
    res = facts["img_resolution"]
    assert cfg.name == name
    assert cfg.display_name == facts["display_name"]
    assert cfg.input_size == (3, res, res)
    assert cfg.crop_pct == facts["crop_pct"]
    assert cfg.crop_pct == (0.875 if name in ("gpunet_p0", "gpunet_p1") else 1.0)
    assert cfg.interpolation == facts["interpolation"] == "bicubic"
    assert tuple(cfg.mean) == tuple(facts["mean"]) == (0.485, 0.456, 0.406)
    assert tuple(cfg.std) == tuple(facts["std"]) == (0.229, 0.224, 0.225)
    assert cfg.num_classes == facts["num_classes"]
    assert cfg.nvidia_key == facts["latency_key"]
    assert cfg.checkpoint_format == facts["checkpoint_format"]
    assert cfg.url == facts["ngc_checkpoint_url"]
    m = URL_RE.match(cfg.url)
    assert m and f"gpunet_{m.group(1)}" == name
    assert cfg.top1 == PUBLISHED_TOP1[name]
    assert gpunet.get_architecture(name).img_resolution == res
    d = cfg.to_dict()
    assert d["url"] == cfg.url and d["input_size"] == (3, res, res)
    assert cfg.params == facts["num_params"]  # `gpunet list` reads these without building the model
    assert cfg.macs == facts["macs_native"]


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_p1", "gpunet_d1"])
def test_create_model_eval_mode_and_cfg(name: str) -> None:
    model = gpunet.create_model(name)
    assert isinstance(model, GPUNet)
    assert not model.training
    assert not any(m.training for m in model.modules())
    cfg = gpunet.get_pretrained_config(name)
    assert model.pretrained_cfg["ngc_url"] == cfg.url and model.pretrained_cfg["name"] == name
    assert "url" not in model.pretrained_cfg  # nothing a timm loader would fetch
    assert model.pretrained_cfg == zoo.model_pretrained_cfg(name) and model.default_cfg is model.pretrained_cfg
    assert model.arch == gpunet.get_architecture(name)


def test_unknown_name_suggests() -> None:
    with pytest.raises(ValueError) as info:
        gpunet.create_model("gpunet_d3")
    msg = str(info.value)
    assert "gpunet_d3" in msg and "Did you mean" in msg
    assert any(n in msg.split("Did you mean")[1][:20] for n in ("gpunet_d1", "gpunet_d2"))
    with pytest.raises(ValueError, match="gpunet_p0"):
        gpunet.create_model("gpunet-p0")
    with pytest.raises(ValueError):
        gpunet.get_architecture("resnet50")


def test_create_model_from_json_path(shared_reference: Path, tmp_path: Path) -> None:
    src = shared_reference / "configs" / "gpunet_d1.json"
    path = tmp_path / "1.25ms-D.json"
    shutil.copyfile(src, path)
    model = gpunet.create_model(path)
    assert isinstance(model, GPUNet) and not model.training
    assert model.arch == gpunet.get_architecture("gpunet_d1")
    assert model.pretrained_cfg.get("name") == "gpunet_d1"  # recognised as the zoo model
    model2 = gpunet.create_model(str(path), num_classes=3)
    with torch.no_grad():
        assert model2(torch.randn(1, 3, 64, 64)).shape == (1, 3)


def test_create_model_from_custom_json(tmp_path: Path) -> None:
    obj = gpunet.get_architecture("gpunet_0").to_json()
    obj[0]["img_resolution"] = 128
    obj[-1]["num_classes"] = 11
    path = tmp_path / "custom.json"
    path.write_text(json.dumps(obj))
    model = gpunet.create_model(path)
    assert model.pretrained_cfg == {}
    assert model.num_classes == 11
    with pytest.raises(ValueError, match="pretrained"):
        gpunet.create_model(path, pretrained=True)


def test_create_model_bad_json_path(tmp_path: Path) -> None:
    with pytest.raises(gpunet.ArchitectureError) as info:
        gpunet.create_model(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)


def _count_macs(model: nn.Module, res: int) -> int:
    total = 0

    def hook(mod: nn.Module, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            per_out = mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            total += out[0].numel() * per_out
        else:
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        with torch.no_grad():
            model(torch.empty(1, 3, res, res, device="meta"))
    finally:
        for h in handles:
            h.remove()
    return total


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_macs_match_reference(reference_models: dict[str, Any], name: str) -> None:
    """Exact MACs at 224 px and the native resolution: verifies every output size (e.g. VALID fused stride 2)."""
    facts = reference_models[name]
    model = _meta_model(name).eval()
    assert _count_macs(model, 224) == facts["macs_224"]
    assert _count_macs(model, facts["img_resolution"]) == facts["macs_native"]


def test_macs_on_cpu_match_meta(reference_models: dict[str, Any]) -> None:
    model = gpunet.create_model("gpunet_2")  # two fused stride-2 blocks with VALID padding
    total = 0

    def hook(mod: nn.Module, inputs: Any, out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += out[0].numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    with torch.no_grad():
        model(torch.zeros(1, 3, 224, 224))
    for h in handles:
        h.remove()
    assert total == reference_models["gpunet_2"]["macs_224"]


def test_absurd_class_count_is_refused_before_allocation() -> None:
    """`num_classes=10**9` used to try to allocate a 10^9-row classifier (MemoryError / traceback)."""
    from gpunet.errors import SettingError

    with pytest.raises(SettingError, match="MAX_CLASSES"):
        gpunet.create_model("gpunet_0", num_classes=10**9)
