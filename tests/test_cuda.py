"""CUDA-only checks (each skips cleanly without a GPU): numerics against NVIDIA's golden logits in fp32 with TF32
off, fp16/bf16 tolerances with top-1 unchanged, channel padding, CUDA graphs and torch.compile equal to eager,
the benchmark mixing every graph backend without a crash, AMP training steps, predict/validate --device cuda.

`scripts/gpu_check.sh` runs this file on the GPU machine (with `-m ''`: the slow tests too). The golden files
are read from `GPUNET_REFERENCE_DIR` when set (the GPU machine gets a copy carried with the checkout), else
from ../shared/reference.
"""

from __future__ import annotations

import copy
import gc
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
from _helpers import calibrate_bn, rel_err, run_cli, within_fp32_rounding, write_tiny_arch
from _train_helpers import TINY_A, make_dataset, run_train, write_arch
from conftest import REFERENCE_DIR
from test_deploy import randomise_bn

import gpunet
from gpunet.deploy.optimize import CudaGraphModule, optimize_for_inference
from gpunet.train import train
from gpunet.weights import save_safetensors_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available on this machine")

GOLDEN_MODELS = ("gpunet_0", "gpunet_d1")
RESOLUTIONS = {"logits_224": 224, "logits_257": 257}
HALF_TOLERANCE = {"fp16": 3e-3, "bf16": 1.5e-2}  # the first H200 run: 1.3e-3 and 8.4e-3


@pytest.fixture
def no_tf32() -> Iterator[None]:
    """fp32 as fp32: TF32 off for convolutions and matmuls during the test (restored afterwards)."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


# ---------------------------------------------------------------------------- golden numerics on the GPU

def _reference_dir() -> Path:
    path = Path(os.environ.get("GPUNET_REFERENCE_DIR", REFERENCE_DIR))
    if not (path / "golden" / "weights.py").is_file():
        pytest.skip(f"golden reference files not found at {path} (set GPUNET_REFERENCE_DIR)")
    return path


@pytest.fixture(scope="module")
def golden(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, Any], Path]]:
    """Per golden model: NVIDIA's expected logits and a checkpoint of the golden weights in NVIDIA's layout."""
    ref = _reference_dir()
    spec = importlib.util.spec_from_file_location("gpunet_golden_weights_cuda", ref / "golden" / "weights.py")
    assert spec is not None and spec.loader is not None
    weights: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(weights)
    out = {}
    tmp = tmp_path_factory.mktemp("golden_cuda")
    for name in GOLDEN_MODELS:
        expected = torch.load(ref / "golden" / f"{name}.expected.pt", weights_only=True)
        pth = tmp / f"{expected['latency_key']}.pth.tar"
        weights.write_golden_checkpoint(str(ref / "state_dict" / f"{name}.tsv"), str(pth), "timm", arch=name,
                                        realistic=True)
        out[name] = (expected, pth)
    return out


def _inputs(expected: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The golden inputs (the recipe of the expected files: seed 0, two images) per expected-logits key."""
    sizes = {"logits_native": expected["img_resolution"], **RESOLUTIONS}
    out = {}
    for key, res in sizes.items():
        torch.manual_seed(0)
        out[key] = torch.randn(2, 3, res, res)
    return out


@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_fp32_on_cuda(golden: dict[str, tuple[dict[str, Any], Path]], no_tf32: None, name: str) -> None:
    """fp32, TF32 off: the plain, fused and padded models on CUDA give NVIDIA's logits (1e-5 relative)."""
    expected, pth = golden[name]
    model = gpunet.create_model(name, weights=pth).eval().cuda()
    fast = optimize_for_inference(copy.deepcopy(model), pad_channels=8)
    with torch.inference_mode():
        for key, x in _inputs(expected).items():
            x = x.cuda()
            assert rel_err(model(x), expected[key]) <= 1e-5, (name, key)
            assert rel_err(fast(x.contiguous(memory_format=torch.channels_last)), expected[key]) <= 1e-5, (name, key)


@pytest.mark.parametrize("precision", ["fp16", "bf16"])
@pytest.mark.parametrize("name", GOLDEN_MODELS)
def test_golden_half_precision(golden: dict[str, tuple[dict[str, Any], Path]], name: str, precision: str) -> None:
    """fp16/bf16 fused (and padded) models: within the measured tolerance, and the same top-1 as NVIDIA's fp32."""
    expected, pth = golden[name]
    model = gpunet.create_model(name, weights=pth).eval()
    for pad in (None, 8):
        fast = optimize_for_inference(copy.deepcopy(model), device="cuda", precision=precision, pad_channels=pad)
        dtype = next(fast.parameters()).dtype
        with torch.inference_mode():
            for key, x in _inputs(expected).items():
                got = fast(x.cuda().to(dtype).contiguous(memory_format=torch.channels_last)).float()
                assert rel_err(got, expected[key]) <= HALF_TOLERANCE[precision], (name, precision, pad, key)
                assert torch.equal(got.argmax(1).cpu(), expected[key].argmax(1)), (name, precision, pad, key)


# ---------------------------------------------------------------------------- CUDA graphs and torch.compile

def test_cuda_graph_equals_eager_and_owns_its_weights(no_tf32: None) -> None:
    """The graph keeps the module it replays (the benchmark's crash: a graph reading freed weights), copies its
    outputs, and captures one graph per input shape."""
    model = calibrate_bn(gpunet.create_model("gpunet_d1"), 96).cuda()
    x1, x2 = torch.randn(2, 3, 96, 96, device="cuda"), torch.randn(2, 3, 96, 96, device="cuda")
    with torch.inference_mode():
        ref1, ref2 = model(x1), model(x2)
        exact = copy.deepcopy(model).double()
        truth1, truth2 = exact(x1.double()), exact(x2.double())
        del exact
    graphed = CudaGraphModule(optimize_for_inference(copy.deepcopy(model)))
    del model
    gc.collect()
    torch.cuda.empty_cache()
    with torch.inference_mode():
        churn = [torch.randn(1 << 20, device="cuda") for _ in range(64)]  # reuse whatever memory was freed
        out1 = graphed(x1)
        out2 = graphed(x2)
        del churn
        assert within_fp32_rounding(out1, ref1, truth1) and within_fp32_rounding(out2, ref2, truth2)  # not overwritten
        out3 = graphed(torch.randn(1, 3, 64, 64, device="cuda"))
    assert out3.shape == (1, 1000) and len(graphed.captured) == 2
    with torch.no_grad():  # captured under inference_mode, replayed outside it
        assert within_fp32_rounding(graphed(x2), ref2, truth2)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="torch.compile on CUDA needs Triton")
def test_compile_and_graph_equal_eager(no_tf32: None) -> None:
    model = calibrate_bn(gpunet.create_model("gpunet_0"), 64).cuda()
    x = torch.randn(2, 3, 64, 64, device="cuda")
    with torch.inference_mode():
        ref, truth = model(x), copy.deepcopy(model).double()(x.double())
        compiled = optimize_for_inference(copy.deepcopy(model), compile=True, cuda_graph=True, dynamic=False,
                                          pad_channels=8)
        assert isinstance(compiled, CudaGraphModule)
        for _ in range(3):
            got = compiled(x.contiguous(memory_format=torch.channels_last))
    assert within_fp32_rounding(got, ref, truth)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="torch.compile on CUDA needs Triton")
def test_auto_mode_equals_eager(tmp_path: Path, no_tf32: None) -> None:
    """mode="auto" (padding, inductor max-autotune, CUDA graph) on a tiny architecture (quick to autotune)."""
    model = calibrate_bn(gpunet.create_model(write_tiny_arch(tmp_path / "tiny.json")), 32).cuda()
    x = torch.randn(4, 3, 32, 32, device="cuda")
    with torch.inference_mode():
        ref, truth = model(x), copy.deepcopy(model).double()(x.double())
        fast = optimize_for_inference(copy.deepcopy(model), mode="auto")
        got = fast(x.contiguous(memory_format=torch.channels_last))
    assert isinstance(fast, CudaGraphModule) and within_fp32_rounding(got, ref, truth)


@pytest.mark.skipif(importlib.util.find_spec("triton") is None, reason="the depthwise kernel is a Triton kernel")
@pytest.mark.parametrize("cuda_graph", [False, True])
def test_triton_depthwise_equals_eager(no_tf32: None, cuda_graph: bool) -> None:
    """The Triton depthwise path (`triton-dw`, `triton-dw-cudagraph` backends): fp32 within rounding of the plain
    model, fp16 with the same top-1 as fp32 on these inputs."""
    model = calibrate_bn(gpunet.create_model("gpunet_d1"), 96).cuda()
    x = torch.randn(4, 3, 96, 96, device="cuda")
    with torch.inference_mode():
        ref, truth = model(x), copy.deepcopy(model).double()(x.double())
        fast = optimize_for_inference(copy.deepcopy(model), pad_channels=8, triton_depthwise=True,
                                      cuda_graph=cuda_graph)
        got = fast(x.contiguous(memory_format=torch.channels_last))
        assert within_fp32_rounding(got, ref, truth), rel_err(got, ref)
        half = optimize_for_inference(copy.deepcopy(model), pad_channels=8, triton_depthwise=True,
                                      cuda_graph=cuda_graph, precision="fp16")
        low = half(x.half().contiguous(memory_format=torch.channels_last)).float()
    assert rel_err(low, ref) <= 2e-2 and torch.equal(low.argmax(1), ref.argmax(1))


@pytest.mark.slow  # compiles D1 for two backends and two batch sizes: a minute or two
def test_benchmark_mixing_graph_backends_does_not_crash(tmp_path: Path) -> None:
    """The issue's crash: `--backends ...,cudagraph,compile` on D1 fp16. Every combination now runs (or is skipped
    with a reason), and results.json holds every record."""
    backends = "eager,fused,padded,cudagraph,padded-cudagraph,compile,compile-cudagraph"
    r = run_cli(["benchmark", "--device", "cuda", "--models", "gpunet_d1", "--img-size", "160", "--precision", "fp16",
                 "--backends", backends, "--batch-sizes", "1,8", "--repeats", "5", "--warmup", "2", "--no-plots",
                 "--quiet", "-o", tmp_path / "out"], timeout=900)
    assert r.returncode == 0, r.stderr[-2000:]
    recs = json.loads((tmp_path / "out" / "results.json").read_text())["records"]
    assert len(recs) == 14
    failed = [(x["backend"], x["batch"], x["reason"]) for x in recs if x["skipped"]]
    if importlib.util.find_spec("triton") is None:
        failed = [f for f in failed if "Triton" not in f[2]]
    assert not failed


# ---------------------------------------------------------------------------- training and the command line

@pytest.mark.parametrize("amp_dtype", ["float16", "bfloat16"])
def test_amp_training_steps(tmp_path: Path, amp_dtype: str) -> None:
    """AMP on CUDA (fp16 with GradScaler, bf16), channels_last: a finite loss that falls over a few epochs."""
    data = make_dataset(tmp_path / "data", classes=2, train_per_class=16, val_per_class=0)
    arch = write_arch(tmp_path / "tiny.json", TINY_A)
    result = train(data, model=str(arch), device="cuda", amp=True, amp_dtype=amp_dtype, channels_last=True, epochs=5,
                   batch_size=8, lr=0.05, warmup_epochs=0, workers=0, val_split="", aa="none", smoothing=0.0,
                   log_interval=1000, output=str(tmp_path / "o"))
    losses = [row["train_loss"] for row in result.summary]
    assert len(losses) == 5 and all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0], losses


def test_torchrun_one_process_on_cuda(tmp_path: Path) -> None:
    """One torchrun process: the trainer's own NCCL group and DDP, with AMP and channels_last."""
    make_dataset(tmp_path / "data", classes=2, train_per_class=8, val_per_class=2)
    write_arch(tmp_path / "tiny.json", TINY_A)
    r = run_train(["data", "--model", "tiny.json", "--device", "cuda", "--amp", "--channels-last", "--epochs", "1",
                   "-b", "4", "--workers", "0", "--output", "out", "--experiment", "x"], cwd=tmp_path, torchrun=1)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "1 process(es) on cuda:0 (DDP over nccl)" in r.stderr
    assert (tmp_path / "out" / "x" / "last.pth.tar").is_file()


def test_predict_and_validate_on_cuda(tmp_path: Path) -> None:
    """The command line on --device cuda: the same top-1 labels and accuracy as on the CPU."""
    data = make_dataset(tmp_path / "data", classes=2, train_per_class=0, val_per_class=4)
    model = randomise_bn(gpunet.create_model(write_tiny_arch(tmp_path / "tiny.json", num_classes=2)))
    weights = tmp_path / "w.safetensors"
    save_safetensors_checkpoint(model, weights)
    labels, top1 = {}, {}
    for device in ("cpu", "cuda"):
        p = run_cli(["predict", data / "val", "--model", weights, "--device", device, "--format", "json"])
        assert p.returncode == 0, p.stderr[-2000:]
        out = json.loads(p.stdout)
        assert out["device"].startswith(device)
        labels[device] = [(r["file"], r["topk"][0]["label"]) for r in out["results"]]
        v = run_cli(["validate", data / "val", "--model", weights, "--device", device, "--workers", "0",
                     "--results-file", tmp_path / f"{device}.json"])
        assert v.returncode == 0, v.stderr[-2000:]
        (row,) = json.loads((tmp_path / f"{device}.json").read_text())
        assert row["device"].startswith(device) and row["count"] == 8
        top1[device] = row["top1"]
    assert labels["cpu"] == labels["cuda"] and len(labels["cpu"]) == 8
    assert top1["cpu"] == top1["cuda"]
