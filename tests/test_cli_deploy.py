"""`gpunet export` / `gpunet benchmark` through the installed command (real subprocesses)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

GPUNET = [sys.executable, "-m", "gpunet"]


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*GPUNET, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_export_onnx_prints_the_parity_check(tmp_path: Path) -> None:
    out = tmp_path / "g0.onnx"
    proc = _run("export", "gpunet_0", "--random-weights", "--img-size", "64", "-o", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "max abs diff" in proc.stdout and str(out) in proc.stdout
    model = onnx.load(str(out))
    assert model.graph.input[0].name == "images" and model.graph.output[0].name == "logits"


def test_export_without_weights_is_refused(tmp_path: Path) -> None:
    proc = _run("export", "gpunet_0", "-o", str(tmp_path / "x.onnx"), cwd=tmp_path)
    assert proc.returncode == 2
    assert "gpunet: error:" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "x.onnx").exists()


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="TensorRT is installed here")
def test_export_tensorrt_says_what_to_install(tmp_path: Path) -> None:
    proc = _run("export", "gpunet_0", "--random-weights", "--img-size", "64", "--format", "tensorrt",
                "-o", str(tmp_path / "g0.plan"), cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "pip install tensorrt" in proc.stderr


def test_benchmark_writes_json_and_csv(tmp_path: Path) -> None:
    out = tmp_path / "bench"
    proc = _run("benchmark", "--models", "gpunet_0", "--img-size", "64", "--batch-sizes", "1", "--backends",
                "eager,fused", "--warmup", "1", "--repeats", "2", "--threads", "1", "--no-plots", "--output",
                str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    data = json.loads((out / "results.json").read_text())
    records = data["records"]
    assert data["header"]
    backends = {r["backend"] for r in records if not r.get("skipped")}
    assert {"eager", "fused"} <= backends
    assert all(r["median_ms"] > 0 for r in records if not r.get("skipped"))
    assert (out / "results.csv").read_text().count("\n") >= 3
