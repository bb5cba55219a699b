"""The Triton depthwise kernel (gpunet.deploy.depthwise), run here by Triton's interpreter on CPU tensors:
each layer and whole models equal the fused PyTorch model to fp32 summation order; where it cannot run it
is refused (plans) or skipped (benchmark) with the reason."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
import torch
from _helpers import ROOT, models_default_and_slow
from test_deploy import randomise_bn
from torch import nn

import gpunet
from gpunet.bench import BenchmarkConfig, benchmark
from gpunet.blocks import ConvBnAct
from gpunet.deploy.depthwise import TritonDepthwise, is_depthwise, use_triton_depthwise
from gpunet.deploy.optimize import plan_inference
from gpunet.errors import SettingError

pytest.importorskip("triton")
pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _interpreted(code: str) -> Any:
    """Run `code` in a fresh process under Triton's interpreter (the kernel then runs on CPU tensors); the JSON
    it prints. Triton fixes its mode when it is first imported, hence the process of its own."""
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
           "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, env=env,
                          timeout=600, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _fused_layer(channels: int, k: int, stride: int, act: str | None, seed: int = 0) -> ConvBnAct:
    torch.manual_seed(seed)
    layer = randomise_bn(ConvBnAct(channels, channels, k, stride=stride, padding=k // 2, groups=channels, act=act),
                         seed)
    layer.fuse()
    return layer


LAYERS = [(40, 3, 1, "relu"), (33, 5, 2, "swish"), (67, 7, 1, None), (16, 3, 2, "relu"), (130, 5, 1, "swish")]
LAYER_CHECKS = """
    import json, torch
    from test_depthwise import LAYERS, _fused_layer
    from gpunet.deploy.depthwise import TritonDepthwise
    out = {}
    with torch.inference_mode():
        for channels, k, stride, act in LAYERS:
            layer = _fused_layer(channels, k, stride, act)
            x = torch.randn(2, channels, 13, 11)
            ref = layer(x)
            for fmt in ("contiguous_format", "channels_last"):
                got = TritonDepthwise(layer)(x.contiguous(memory_format=getattr(torch, fmt)))
                out[f"{channels}-{k}-{stride}-{act}-{fmt}"] = [
                    list(got.shape) == list(ref.shape), got.is_contiguous(memory_format=torch.channels_last),
                    float((got - ref).abs().max()), float(ref.abs().max())]
        layer, x = _fused_layer(48, 5, 1, "swish"), torch.randn(2, 48, 9, 9)
        ref = layer(x)
        for dtype in ("float16", "bfloat16"):
            got = TritonDepthwise(layer).to(getattr(torch, dtype))(x.to(getattr(torch, dtype)))
            out[dtype] = [str(got.dtype), float((got.float() - ref).abs().max() / ref.abs().max())]
    print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def layer_checks() -> dict[str, Any]:
    return _interpreted(LAYER_CHECKS)


@pytest.mark.parametrize(("channels", "k", "stride", "act"), LAYERS)
def test_kernel_equals_the_fused_layer(layer_checks: dict[str, Any], channels: int, k: int, stride: int,
                                       act: str | None) -> None:
    """Odd channel counts (a partial channel tile), odd image sizes (partial pixel tiles, borders), both strides,
    every activation; NCHW or channels_last in, channels_last out; fp32 within summation order."""
    for fmt in ("contiguous_format", "channels_last"):
        same_shape, channels_last, max_err, scale = layer_checks[f"{channels}-{k}-{stride}-{act}-{fmt}"]
        assert same_shape and channels_last
        assert max_err <= 1e-6 + 1e-5 * scale, (fmt, max_err, scale)


@pytest.mark.parametrize(("dtype", "tolerance"), [("float16", 2e-3), ("bfloat16", 1.6e-2)])
def test_half_precision_within_its_rounding(layer_checks: dict[str, Any], dtype: str, tolerance: float) -> None:
    """Inputs, weights and output in half precision, fp32 accumulation: within the format's rounding."""
    got_dtype, rel = layer_checks[dtype]
    assert got_dtype == f"torch.{dtype}" and rel <= tolerance


def test_without_the_kernel_the_layer_computes_the_same_in_pytorch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    layer = _fused_layer(24, 3, 2, "relu")
    x = torch.randn(2, 24, 10, 10)
    with torch.inference_mode():
        torch.testing.assert_close(TritonDepthwise(layer)(x), layer(x), rtol=1e-6, atol=1e-7)


def test_only_fused_depthwise_layers_are_taken() -> None:
    assert not is_depthwise(ConvBnAct(8, 8, 3, padding=1, groups=8))  # BatchNorm not folded yet
    pointwise = ConvBnAct(8, 16, 1)
    pointwise.fuse()
    assert not is_depthwise(pointwise)
    with pytest.raises(SettingError, match="expected a fused depthwise ConvBnAct"):
        TritonDepthwise(pointwise)
    assert is_depthwise(_fused_layer(8, 3, 1, None))


def _depthwise_count(model: nn.Module) -> int:
    return sum(isinstance(m, nn.Conv2d) and m.groups == m.in_channels == m.out_channels > 1 and m.kernel_size[0] > 1
               for m in model.modules())


MODEL_CHECK = """
    import copy, json, torch, gpunet
    from _helpers import calibrate_bn, rel_err, within_fp32_rounding
    from test_depthwise import _depthwise_count
    from gpunet.deploy.depthwise import TritonDepthwise
    from gpunet.deploy.optimize import optimize_for_inference
    torch.manual_seed(0)
    fused = calibrate_bn(gpunet.create_model({name!r}), 48).fuse()
    fast = optimize_for_inference(copy.deepcopy(fused), device="cpu", pad_channels=8, triton_depthwise=True)
    x = torch.randn(2, 3, 48, 48)
    with torch.inference_mode():
        ref, got = fused(x), fast(x.contiguous(memory_format=torch.channels_last))
        truth = copy.deepcopy(fused).double()(x.double())
    print(json.dumps({{"depthwise": _depthwise_count(fused), "left": _depthwise_count(fast),
                      "swapped": sum(isinstance(m, TritonDepthwise) for m in fast.modules()),
                      "apart": rel_err(ref[0] - ref[1], ref), "rel": rel_err(got, ref),
                      "rounding": within_fp32_rounding(got, ref, truth)}}))
"""


@pytest.mark.parametrize("name", models_default_and_slow(default=("gpunet_0",)))  # the interpreter: ~20 s for D1
def test_models_equal_the_fused_model(name: str) -> None:
    """Padded to 8 with the Triton depthwise kernels vs the fused model, fp32: the same function up to the
    order of fp32 sums (`within_fp32_rounding`: as close to the float64 model as the fused model is)."""
    r = _interpreted(MODEL_CHECK.format(name=name))
    assert r["swapped"] == r["depthwise"] > 0 and r["left"] == 0
    assert r["apart"] > 0.1  # the two images give different logits: the comparison can fail
    assert r["rounding"], r


def test_where_the_kernel_cannot_run_plans_refuse_and_the_benchmark_skips(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(SettingError, match="triton_depthwise=True: Triton kernels run on CUDA devices"):
        plan_inference("cpu", triton_depthwise=True)
    with pytest.raises(SettingError, match="inductor writes its own fused kernels"):
        plan_inference("cpu", triton_depthwise=True, compile=True)
    assert "Triton" not in plan_inference("cpu", mode="auto").describe()  # never picked unasked
    results = benchmark(BenchmarkConfig(models=("gpunet_0",), backends=("triton-dw", "triton-dw-cudagraph"),
                                        batch_sizes=(1,), img_size=32, device="cpu", threads=1, warmup=0, repeats=1))
    reasons = {r["backend"]: r["reason"] for r in results["records"]}
    assert reasons == {
        "triton-dw": "triton-dw: Triton kernels run on CUDA devices (or on CPU under TRITON_INTERPRET=1), not on cpu",
        "triton-dw-cudagraph": "triton-dw-cudagraph needs CUDA (CUDA graphs)"}


def test_use_triton_depthwise_counts_what_it_swapped() -> None:
    model = gpunet.create_model("gpunet_0").fuse()
    n = _depthwise_count(model)
    assert use_triton_depthwise(model) == n and use_triton_depthwise(model) == 0
    assert "kernel_size=" in repr(next(m for m in model.modules() if isinstance(m, TritonDepthwise)))
