"""The builder's per-layer view (`layer_geometry`, `build_layer`) agrees with the models it builds."""

from __future__ import annotations

import pytest
import torch

import gpunet
from gpunet.arch import FusedIRBSpec, TailSpec
from gpunet.blocks import Tail, is_fused
from gpunet.builder import build_layer, layer_geometry
from gpunet.model import GPUNet

MODELS = gpunet.list_models()


def _output_sizes(model: GPUNet, paths: list[str], img_size: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    hooks = [model.get_submodule(p).register_forward_hook(
        lambda _m, _i, out, p=p: shapes.__setitem__(p, tuple(out.shape[1:]))) for p in paths]
    with torch.no_grad():
        model(torch.zeros(1, 3, img_size, img_size, device="meta"))
    for h in hooks:
        h.remove()
    return shapes


@pytest.mark.parametrize("name", MODELS)
def test_geometry_matches_the_built_model(name: str) -> None:
    arch = gpunet.get_architecture(name)
    with torch.device("meta"):
        model = GPUNet(arch).eval()
    geometry = layer_geometry(arch)
    assert [g.spec for g in geometry] == list(arch.layers)
    shapes = _output_sizes(model, [g.module_path for g in geometry[:-1]], arch.img_resolution)
    for g, nxt in zip(geometry[:-1], geometry[1:], strict=True):
        channels, height, width = shapes[g.module_path]
        assert (channels, height, width) == (g.spec.out_channels, g.out_resolution, g.out_resolution), g
        assert nxt.in_resolution == g.out_resolution
    assert geometry[0].in_resolution == arch.img_resolution
    assert geometry[-1].hidden_channels == (1152 if arch.distill else arch.tail.out_channels)


@pytest.mark.parametrize("name", MODELS)
def test_build_layer_is_the_models_layer(name: str) -> None:
    """Each layer built alone has the very tensors (names and shapes) of that layer inside the model."""
    arch = gpunet.get_architecture(name)
    with torch.device("meta"):
        model = GPUNet(arch)
        for g in layer_geometry(arch):
            alone = build_layer(arch, g.index)
            if isinstance(g.spec, TailSpec):
                assert isinstance(alone, Tail)
                expected = {k: v.shape for k, v in model.state_dict().items()
                            if k.split(".")[0] in ("head", "head_proj", "classifier")}
            else:
                prefix = g.module_path + "."
                expected = {k[len(prefix):]: v.shape for k, v in model.state_dict().items() if k.startswith(prefix)}
            assert {k: v.shape for k, v in alone.state_dict().items()} == expected, g.module_path


def test_fused_block_padding_quirk_is_in_the_geometry() -> None:
    """Non-distilled stride-2 Fused-IRBs get NVIDIA's VALID padding (0); stride-1 ones keep k // 2."""
    fused = [g for g in layer_geometry(gpunet.get_architecture("gpunet_2")) if isinstance(g.spec, FusedIRBSpec)]
    assert {g.stride for g in fused} == {1, 2}
    assert all(g.padding == (0 if g.stride == 2 else g.kernel_size // 2) for g in fused)


def test_tail_alone_computes_what_the_model_does() -> None:
    arch = gpunet.get_architecture("gpunet_d1")
    torch.manual_seed(0)
    model = GPUNet(arch).eval()
    tail = build_layer(arch, len(arch.layers) - 1).eval()
    tail.load_state_dict({k: v for k, v in model.state_dict().items()
                          if k.split(".")[0] in ("head", "head_proj", "classifier")})
    x = torch.randn(2, arch.tail.in_channels, 4, 4)
    with torch.no_grad():
        assert torch.equal(tail(x), model.forward_head(model.head(x)))


def test_is_fused_follows_the_batchnorms() -> None:
    model = gpunet.create_model("gpunet_0")
    assert not is_fused(model)
    assert is_fused(model.fuse())
