"""`gpunet benchmark` on a tiny configuration: real runs, real files."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gpunet.bench import (
    BACKEND_BUILDERS,
    BACKENDS,
    CSV_FIELDS,
    BackendRequest,
    BenchmarkConfig,
    Built,
    benchmark,
    measure_peak,
)
from gpunet.cli import main
from gpunet.device import resolve_device
from gpunet.errors import BenchmarkError
from gpunet.timing import percentile

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
DEVICE = str(resolve_device("auto"))  # what a run without --device measures on: cuda on a GPU machine
RECORD_KEYS = {"model", "backend", "precision", "batch", "img_size", "threads", "device", "median_ms", "p90_ms",
               "p99_ms", "images_per_s", "gflops", "peak_gflops", "peak_share", "skipped", "reason"}


def run_benchmark(*argv: str) -> int:
    """`gpunet benchmark ARGV`: its exit status."""
    return main(["benchmark", *argv])


def _have_openvino() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return _have_export()


def _have_export() -> bool:
    try:
        import onnxruntime  # noqa: F401

        import gpunet.deploy.onnx  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    out = tmp_path_factory.mktemp("bench")
    backends = ("eager,fused,fused-microbatch,cudagraph" + (",onnxruntime" if _have_export() else "")
                + (",openvino" if _have_openvino() else ""))
    code = run_benchmark("--models", "gpunet_0", "--peers", "timm:mobilenetv3_small_050", "--img-size", "64",
                               "--batch-sizes", "1,2", "--repeats", "2", "--warmup", "1", "--threads", "1",
                               "--backends", backends, "--precision", "fp32", "--quiet", "--output", str(out))
    return out, code


def test_tiny_run_writes_json(tiny_run: tuple[Path, int]) -> None:
    out, code = tiny_run
    assert code == 0
    data = json.loads((out / "results.json").read_text())
    header = data["header"]
    assert header["machine"]["torch"] == torch.__version__ and header["machine"]["threads"] == 1
    assert header["peak"]["fp32"]["peak_gflops"] > 0
    recs = data["records"]
    models = {r["model"] for r in recs}
    assert models == {"gpunet_0", "timm:mobilenetv3_small_050"}
    for r in recs:
        assert RECORD_KEYS <= set(r)
        assert r["img_size"] == 64 and r["threads"] == 1 and r["device"] == DEVICE  # --device auto
    ran = [r for r in recs if not r["skipped"]]
    assert {(r["model"], r["backend"], r["batch"]) for r in ran} >= {
        (m, b, n) for m in models for b in ("eager", "fused") for n in (1, 2)}
    for r in ran:
        assert r["repeats"] == 2 and len(r["times_ms"]) == 2
        assert 0 < r["median_ms"] <= r["p90_ms"] <= r["p99_ms"]
        assert math.isclose(r["images_per_s"], r["batch"] * 1e3 / r["median_ms"], rel_tol=1e-9)
        assert math.isclose(r["gflops"], 2 * r["macs"] * r["batch"] / r["median_ms"] / 1e6, rel_tol=1e-9)
        assert math.isclose(r["peak_share"], r["gflops"] / r["peak_gflops"], rel_tol=1e-9)
    g0 = next(r for r in ran if r["model"] == "gpunet_0")
    assert g0["top1"] == 78.9 and g0["macs"] > 0
    if not torch.cuda.is_available():
        cg = [r for r in recs if r["backend"] == "cudagraph"]
        assert cg and all(r["skipped"] and "CUDA" in r["reason"] for r in cg)
    if _have_export() and DEVICE == "cpu":  # on CUDA: only with onnxruntime-gpu
        assert any(r["backend"] == "onnxruntime" and not r["skipped"] for r in recs)
    if _have_openvino() and DEVICE == "cpu":  # OpenVINO runs on the CPU only here
        ov = [r for r in ran if r["backend"] == "openvino"]
        assert {(r["model"], r["batch"]) for r in ov} == {(m, n) for m in models for n in (1, 2)}
        assert all("f32 inference precision" in r["note"] for r in ov)
    assert data["header"]["settle_ms"] == 50.0


def test_tiny_run_writes_csv(tiny_run: tuple[Path, int]) -> None:
    out, _ = tiny_run
    with open(out / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    data = json.loads((out / "results.json").read_text())
    assert len(rows) == len(data["records"])
    assert list(rows[0]) == CSV_FIELDS
    for row, rec in zip(rows, data["records"], strict=True):
        assert row["model"] == rec["model"] and int(row["batch"]) == rec["batch"]
        if not rec["skipped"]:
            assert math.isclose(float(row["median_ms"]), rec["median_ms"])


def test_tiny_run_writes_pngs(tiny_run: tuple[Path, int]) -> None:
    out, _ = tiny_run
    for name in ("perf_latency.png", "perf_throughput.png", "perf_pareto.png"):
        data = (out / name).read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 1000, name
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries


def test_unknown_backend_model_precision_are_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv, word in ((["--backends", "eager,warp"], "warp"), (["--models", "gpunet_9"], "gpunet_9"),
                       (["--precision", "fp8"], "fp8"), (["--peers", "efficientnet_b0"], "timm:")):
        code = run_benchmark(*argv, "--quiet", "--output", str(tmp_path / "x"))
        assert code == 2
        assert word in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_percentile() -> None:
    xs = [float(i) for i in range(1, 101)]
    assert percentile(xs, 50) == pytest.approx(50.5)
    assert percentile(xs, 90) == pytest.approx(90.1)
    assert percentile(xs, 99) == pytest.approx(99.01)
    assert percentile([3.0], 99) == 3.0


def test_measure_peak_is_positive() -> None:
    peak = measure_peak(torch.device("cpu"), torch.float32, size=256, repeats=2)
    assert peak["peak_gflops"] == max(peak["matmul_gflops"], peak["onednn_gemm_gflops"]) > 0


@pytest.mark.skipif(not _have_openvino(), reason="openvino is not installed")
def test_openvino_runs_bf16(tmp_path: Path) -> None:
    """bf16 inputs reach OpenVINO as float32 (numpy has no bfloat16); it computes in bf16 where the CPU can."""
    code = run_benchmark("--models", "gpunet_0", "--img-size", "32", "--batch-sizes", "1", "--repeats", "1",
                               "--warmup", "1", "--threads", "1", "--backends", "openvino", "--precision", "bf16",
                               "--device", "cpu",  # OpenVINO's CPU plugin, also on a GPU machine
                               "--no-plots", "--quiet", "--output", str(tmp_path))
    assert code == 0
    (rec,) = json.loads((tmp_path / "results.json").read_text())["records"]
    assert not rec["skipped"], rec["reason"]
    assert rec["precision"] == "bf16" and "bf16 inference precision" in rec["note"] and rec["median_ms"] > 0


def test_every_backend_has_one_builder() -> None:
    assert tuple(BACKEND_BUILDERS) == BACKENDS


def test_config_errors_are_benchmark_errors() -> None:
    for changes, word in (({"backends": ("warp",)}, "warp"), ({"precisions": ("fp8",)}, "fp8"),
                          ({"repeats": 0}, "--repeats"), ({"threads": 0}, "--threads"),
                          ({"batch_sizes": (0,)}, "batch sizes")):
        with pytest.raises(BenchmarkError, match=word):
            BenchmarkConfig(**changes)  # type: ignore[arg-type]
    assert BenchmarkConfig(models="gpunet_0, gpunet_1", backends="eager").models == ("gpunet_0", "gpunet_1")


def test_threads_are_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """`threads` holds for the run only: the caller's torch thread count is unchanged afterwards."""
    monkeypatch.setattr("gpunet.bench.run.measure_peak", lambda device, dtype: {"peak_gflops": 1.0})
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        seen: list[int] = []
        results = benchmark(BenchmarkConfig(models=("gpunet_0",), backends=("eager",), batch_sizes=(1,),
                                            img_size=32, device="cpu", threads=1, warmup=0, repeats=1),
                            log=lambda _: seen.append(torch.get_num_threads()))
        assert results["header"]["machine"]["threads"] == 1 and 1 in seen  # the run used one thread
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_plots_leave_pyplot_alone(tiny_run: tuple[Path, int]) -> None:
    """The PNGs are drawn on Figure objects: no backend switch, no figure left open in pyplot."""
    plt = pytest.importorskip("matplotlib.pyplot")
    import matplotlib

    from gpunet.bench import plot_results

    backend, open_figures = matplotlib.get_backend(), plt.get_fignums()
    out, _ = tiny_run
    results = json.loads((out / "results.json").read_text())
    paths = plot_results(results, out / "again")
    assert [p.name for p in paths] == ["perf_latency.png", "perf_throughput.png", "perf_pareto.png"]
    assert matplotlib.get_backend() == backend and plt.get_fignums() == open_figures


def test_old_module_path_is_deprecated() -> None:
    import gpunet.benchmark as old
    from gpunet.cli.benchmark import run_benchmark as new_run

    with pytest.deprecated_call():
        assert old.measure_peak is measure_peak
    with pytest.deprecated_call():
        assert old.run_benchmark is new_run
    with pytest.deprecated_call():
        assert old.percentile is percentile


# ---------------------------------------------------------------------------- failures and crashes lose nothing

def test_backend_failing_while_timed_is_recorded_and_the_run_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    """A runner that breaks on its third call (after warm-up): that backend is recorded as failed, at every batch
    size, and the others are measured; `on_record` sees each record as it is done."""
    monkeypatch.setattr("gpunet.bench.run.measure_peak", lambda device, dtype: {"peak_gflops": 1.0})
    real = BACKEND_BUILDERS["fused"]
    calls = {"n": 0}

    def breaking(req: BackendRequest) -> Built:
        built = real(req)

        def run(x: torch.Tensor) -> torch.Tensor:
            calls["n"] += 1
            if calls["n"] >= 3:
                raise RuntimeError("CUDA error: an illegal memory access was encountered\nmore lines")
            return built.run(x)

        return Built(run, built.note, built.channels_last)

    monkeypatch.setitem(BACKEND_BUILDERS, "fused", breaking)
    seen: list[int] = []
    results = benchmark(BenchmarkConfig(models=("gpunet_0",), backends=("eager", "fused"), batch_sizes=(1, 2),
                                        img_size=32, device="cpu", threads=1, warmup=1, repeats=3),
                        on_record=lambda partial: seen.append(len(partial["records"])))
    recs = {(r["backend"], r["batch"]): r for r in results["records"]}
    assert seen == [1, 2, 3, 4]
    assert all(not recs[("eager", b)]["skipped"] and recs[("eager", b)]["repeats"] == 3 for b in (1, 2))
    for b in (1, 2):
        r = recs[("fused", b)]
        assert r["skipped"] and r["median_ms"] is None and r["times_ms"] == []
        assert r["reason"] == "failed: RuntimeError: CUDA error: an illegal memory access was encountered"
    assert calls["n"] == 3  # not built or called again for batch 2


def test_killed_run_keeps_its_finished_records(tmp_path: Path) -> None:
    """results.json is rewritten atomically after every record: SIGKILL mid-run leaves the finished ones readable."""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "gpunet", "benchmark", "--models", "gpunet_0", "--img-size", "96", "--device", "cpu",
           "--batch-sizes", ",".join(str(b) for b in range(1, 17)), "--backends", "eager", "--repeats", "5",
           "--warmup", "0", "--threads", "1", "--no-plots", "--quiet", "-o", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"})
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if (out / "results.json").exists() and len(json.loads((out / "results.json").read_text())["records"]) >= 2:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the run ended before it could be killed: " + proc.stderr.read().decode()[-500:]
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    data = json.loads((out / "results.json").read_text())
    recs = data["records"]
    assert 2 <= len(recs) < 16 and [r["batch"] for r in recs] == list(range(1, len(recs) + 1))
    assert all(not r["skipped"] and r["median_ms"] > 0 for r in recs)
    with open(out / "results.csv", newline="") as f:
        assert len(list(csv.DictReader(f))) >= len(recs) - 1  # written right after the JSON, same record


def test_pytorch_backends_on_cpu_and_settings_restored() -> None:
    """The plan-built backends on CPU (CUDA-only ones skipped with a reason, peers never padded), and the run's
    settings (torch.compile's recompile limit, cuDNN autotuning) are the caller's again afterwards."""
    import torch._dynamo

    limit, autotune = torch._dynamo.config.cache_size_limit, torch.backends.cudnn.benchmark
    results = benchmark(BenchmarkConfig(models=("gpunet_0",), peers=("timm:mobilenetv3_small_050",),
                                        backends=("fused", "padded", "cudagraph", "padded-cudagraph",
                                                  "compile-cudagraph", "auto"),
                                        batch_sizes=(1,), img_size=32, device="cpu", threads=1, warmup=0, repeats=1))
    recs = {(r["model"], r["backend"]): r for r in results["records"]}
    assert torch._dynamo.config.cache_size_limit == limit and torch.backends.cudnn.benchmark == autotune
    for backend in ("cudagraph", "padded-cudagraph", "compile-cudagraph"):
        assert recs[("gpunet_0", backend)]["reason"] == f"{backend} needs CUDA (CUDA graphs)"
    assert recs[("gpunet_0", "padded")]["note"] == "fused, channels_last, channels padded to 8, fp32"
    assert recs[("gpunet_0", "auto")]["note"] == "fused, channels_last, fp32"  # the CPU path
    assert recs[("timm:mobilenetv3_small_050", "padded")]["reason"] == "padded: GPUNets only"
    peer_auto = recs[("timm:mobilenetv3_small_050", "auto")]
    assert not peer_auto["skipped"] and peer_auto["note"].startswith("timm model (no BN folding)")
    assert not any(r["reason"].startswith("failed") for r in results["records"])


def test_models_accepts_an_architecture_json(tmp_path: Path) -> None:
    """`--models my_arch.json` used to say "unknown model ... or pass the path of an NVIDIA-format JSON"."""
    from gpunet.bench import resolve_models
    from gpunet.zoo import get_architecture

    path = tmp_path / "mine.json"
    get_architecture("gpunet_0").save(path)
    (spec,) = resolve_models(str(path), "", 64)
    assert spec.name == str(path) and spec.img_size == 64 and spec.top1 is None and spec.macs > 0
    assert spec.build().num_classes == 1000
