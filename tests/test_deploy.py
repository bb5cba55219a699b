"""Deploy mode: fused (BatchNorm folded) models compute what the unfused ones do."""

from __future__ import annotations

import copy
import importlib.util
import shutil

import pytest
import torch
from _helpers import calibrate_bn, rel_err, within_fp32_rounding
from torch import nn

import gpunet
from gpunet.blocks import ConvBnAct, is_fused
from gpunet.deploy import capture_cuda_graph, fuse, optimize_for_inference
from gpunet.deploy.optimize import CudaGraphModule, cudnn_autotune, plan_inference
from gpunet.errors import SettingError
from gpunet.weights import WeightsError, save_safetensors_checkpoint

pytestmark = pytest.mark.usefixtures("single_thread_torch")

SIZES = {"gpunet_0": 64, "gpunet_1": 72, "gpunet_2": 64, "gpunet_p0": 96, "gpunet_p1": 80, "gpunet_d1": 64,
         "gpunet_d2": 64}


def randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters, so folding really changes the weights.

    Whole models come out with fading activations (logits that hardly depend on the input): compare
    models built with `_helpers.calibrate_bn` instead; this is for single layers and plumbing.
    """
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.25)
                m.weight.copy_(1 + torch.randn(n, generator=g) * 0.2)
                m.bias.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def _close(got: torch.Tensor, ref: torch.Tensor, rtol: float = 1e-5) -> None:
    err = (got.float() - ref.float()).abs().max().item()
    assert err <= rtol * ref.abs().max().item() + 1e-7, f"max |diff| {err:.3g} vs max |ref| {ref.abs().max():.3g}"


def test_all_seven_models_listed() -> None:
    assert sorted(SIZES) == sorted(gpunet.list_models())


@pytest.mark.parametrize("name", sorted(SIZES))
def test_fused_equals_unfused(name: str) -> None:
    """Folding BatchNorm changes only the order of fp32 roundings: the fused model is as close to the unfused
    model in float64 as the unfused fp32 model is (BatchNorm statistics measured on images: a live signal)."""
    torch.manual_seed(0)
    model = calibrate_bn(gpunet.create_model(name), SIZES[name])
    n_bn = sum(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert n_bn > 0
    x = torch.randn(2, 3, SIZES[name], SIZES[name])
    with torch.inference_mode():
        ref, truth = model(x), copy.deepcopy(model).double()(x.double())
        assert rel_err(ref[0] - ref[1], ref) > 0.1  # the logits depend on the input
        fused = copy.deepcopy(model).fuse()
        assert fused is not model and is_fused(fused) and not is_fused(model)
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
        assert all(m.conv.bias is not None for m in fused.modules() if isinstance(m, ConvBnAct))
        assert within_fp32_rounding(fused(x), ref, truth)
        fast = optimize_for_inference(copy.deepcopy(model))  # defaults: channels_last
        assert within_fp32_rounding(fast(x.contiguous(memory_format=torch.channels_last)), ref, truth)
        assert within_fp32_rounding(fast(x), ref, truth)  # a contiguous input works too


def test_fuse_is_idempotent_and_in_place() -> None:
    model = randomise_bn(gpunet.create_model("gpunet_0"))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        assert fuse(model) is model
        fuse(model)
        _close(model(x), ref)


def test_fuse_drops_dropout_and_drop_path() -> None:
    model = gpunet.create_model("gpunet_1", drop_rate=0.5, drop_path_rate=0.2)
    assert any(type(m).__name__ == "DropPath" for m in model.modules())
    model.train()
    fuse(model)
    assert not model.training and model.drop_rate == 0.0
    assert not any(type(m).__name__ in ("DropPath", "Dropout") for m in model.modules())


def test_features_only_fuses() -> None:
    model = randomise_bn(gpunet.create_model("gpunet_d1", features_only=True))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        fused = optimize_for_inference(copy.deepcopy(model))
        got = fused(x.contiguous(memory_format=torch.channels_last))
    assert len(got) == len(ref) >= 3
    for a, b in zip(got, ref, strict=True):
        assert a.shape == b.shape
        _close(a, b)
    assert is_fused(copy.deepcopy(model).fuse())


def test_fused_model_refuses_to_be_saved(tmp_path) -> None:
    model = gpunet.create_model("gpunet_0")
    save_safetensors_checkpoint(model, tmp_path / "ok.safetensors")  # unfused: fine
    model.fuse()
    with pytest.raises(WeightsError, match="fused"):
        save_safetensors_checkpoint(model, tmp_path / "fused.safetensors")
    assert not (tmp_path / "fused.safetensors").exists()


def test_channels_last_weights() -> None:
    model = optimize_for_inference(gpunet.create_model("gpunet_0"), channels_last=True)
    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.kernel_size != (1, 1)]
    assert convs and all(c.weight.is_contiguous(memory_format=torch.channels_last) for c in convs)
    with torch.inference_mode():
        out = model(torch.randn(1, 3, 64, 64).contiguous(memory_format=torch.channels_last))
    assert out.shape == (1, 1000)


def test_bf16_path_runs_and_is_close() -> None:
    model = randomise_bn(gpunet.create_model("gpunet_0"))
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        fast = optimize_for_inference(copy.deepcopy(model), dtype=torch.bfloat16)
        assert next(fast.parameters()).dtype == torch.bfloat16
        out = fast(x.to(torch.bfloat16).contiguous(memory_format=torch.channels_last))
    assert out.dtype == torch.bfloat16 and out.shape == ref.shape
    assert torch.isfinite(out.float()).all()
    # bf16 keeps ~3 significant digits; the logits of a random net must still track the fp32 ones
    cos = torch.nn.functional.cosine_similarity(out.float().flatten(), ref.flatten(), dim=0)
    assert cos > 0.99


def test_compile_path() -> None:
    if not hasattr(torch, "compile"):
        pytest.skip("torch.compile is not available in this PyTorch")
    if shutil.which("g++") is None and shutil.which("c++") is None:
        pytest.skip("torch.compile on CPU needs a C++ compiler (none on PATH)")
    model = randomise_bn(gpunet.create_model("gpunet_0"))
    x = torch.randn(1, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        compiled = optimize_for_inference(copy.deepcopy(model), compile=True)
        got = compiled(x.contiguous(memory_format=torch.channels_last))
    _close(got, ref, rtol=1e-4)


def test_capture_cuda_graph_needs_cuda_input() -> None:
    with pytest.raises(ValueError, match="CUDA"):
        capture_cuda_graph(gpunet.create_model("gpunet_0"), torch.randn(1, 3, 64, 64))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")
def test_cuda_graph_and_fp16_on_gpu() -> None:
    model = randomise_bn(gpunet.create_model("gpunet_0")).cuda()
    x = torch.randn(1, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        ref = model(x)
        fast = optimize_for_inference(copy.deepcopy(model), dtype=torch.float16)
        replay = capture_cuda_graph(fast, x.half().contiguous(memory_format=torch.channels_last))
        out = replay(x.half().contiguous(memory_format=torch.channels_last)).float()
    cos = torch.nn.functional.cosine_similarity(out.flatten(), ref.flatten(), dim=0)
    assert cos > 0.99


def test_micro_batch_gives_the_same_outputs() -> None:
    model = randomise_bn(gpunet.create_model("gpunet_0"))
    x = torch.randn(3, 3, 64, 64)
    with torch.inference_mode():
        ref = model(x)
        mb = optimize_for_inference(copy.deepcopy(model), micro_batch=2)
        _close(mb(x.contiguous(memory_format=torch.channels_last)), ref)
        feats = gpunet.create_model("gpunet_0", features_only=True)
        fref = feats(x)
        fmb = optimize_for_inference(copy.deepcopy(feats), micro_batch=1)(x)
    assert [f.shape for f in fmb] == [f.shape for f in fref]
    with pytest.raises(ValueError):
        optimize_for_inference(gpunet.create_model("gpunet_0"), micro_batch=0)


def test_fuse_marks_nothing_but_the_modules() -> None:
    """Deploy mode is read from the modules (`gpunet.blocks.is_fused`), not from an attribute fuse sets."""
    model = gpunet.create_model("gpunet_0")
    assert not is_fused(model)
    fuse(model)
    assert is_fused(model) and "is_fused" not in vars(model)


def test_old_deploy_names_are_the_package_functions() -> None:
    """`gpunet.deploy` became a package: `gpunet.deploy.fuse` is still the function (no submodule named so)."""
    import gpunet.deploy as deploy
    from gpunet.deploy.optimize import fuse as fuse_impl

    assert deploy.fuse is fuse_impl is gpunet.fuse and callable(deploy.optimize_for_inference)


# ---------------------------------------------------------------------------- the plan: which steps for which device

def test_auto_plan_per_device() -> None:
    """mode="auto": on CUDA padding, inductor's tuned kernels (when Triton is there) and our CUDA graph; on CPU the
    fused channels_last model. Planned without a GPU: the plan is pure logic."""
    cuda = plan_inference(torch.device("cuda"), mode="auto", precision="fp16")
    assert (cuda.pad_channels, cuda.cuda_graph, cuda.channels_last, cuda.dtype) == (8, True, True, torch.float16)
    if importlib.util.find_spec("triton") is not None:
        assert cuda.compile and cuda.compile_mode == "max-autotune-no-cudagraphs" and not cuda.freeze
    assert "channels padded to 8" in cuda.describe() and cuda.describe().endswith("CUDA graph")
    cpu = plan_inference("cpu", mode="auto", precision="bf16")
    assert (cpu.pad_channels, cpu.cuda_graph, cpu.compile, cpu.dtype) == (None, False, False, torch.bfloat16)
    assert cpu.describe() == "fused, channels_last, bf16"
    # what the caller says wins over auto's choice
    mine = plan_inference(torch.device("cuda"), mode="auto", pad_channels=0, compile=False, cuda_graph=False)
    assert (mine.pad_channels, mine.compile, mine.cuda_graph) == (None, False, False)


def test_plan_refuses_what_cannot_work() -> None:
    with pytest.raises(SettingError, match="needs a CUDA device"):
        plan_inference("cpu", cuda_graph=True)
    with pytest.raises(SettingError, match="inductor's own CUDA graphs|own CUDA graphs"):
        plan_inference(torch.device("cuda"), compile=True, compile_mode="reduce-overhead", cuda_graph=True)
    with pytest.raises(SettingError, match="disagree"):
        plan_inference("cpu", precision="bf16", dtype=torch.float32)
    with pytest.raises(SettingError, match="precision"):
        plan_inference("cpu", precision="fp8")
    with pytest.raises(SettingError, match="mode"):
        plan_inference("cpu", mode="fastest")
    with pytest.raises(SettingError, match="CUDA"):
        optimize_for_inference(gpunet.create_model("gpunet_0"), cuda_graph=True)


def test_auto_mode_on_cpu_equals_plain() -> None:
    model = randomise_bn(gpunet.create_model("gpunet_p0"))
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        ref = model(x)
        fast = optimize_for_inference(copy.deepcopy(model), mode="auto", device="cpu")
        _close(fast(x.contiguous(memory_format=torch.channels_last)), ref)


def test_cudnn_autotune_is_scoped() -> None:
    """cuDNN autotuning is process-wide state: switched for the block only, restored even after an error."""
    before = torch.backends.cudnn.benchmark
    try:
        for start in (False, True):
            torch.backends.cudnn.benchmark = start
            with cudnn_autotune(not start):
                assert torch.backends.cudnn.benchmark is (not start)
            assert torch.backends.cudnn.benchmark is start
            with pytest.raises(RuntimeError), cudnn_autotune(not start):
                raise RuntimeError("boom")
            assert torch.backends.cudnn.benchmark is start
    finally:
        torch.backends.cudnn.benchmark = before


def test_cuda_graph_module_needs_cuda_input() -> None:
    graphed = CudaGraphModule(gpunet.create_model("gpunet_0"))
    with pytest.raises(SettingError, match="CUDA input"):
        graphed(torch.randn(1, 3, 32, 32))
    with pytest.raises(SettingError, match=">= 1"):
        CudaGraphModule(nn.Identity(), max_graphs=0)
