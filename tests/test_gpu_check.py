"""scripts/gpu_check.sh and its Python parts (train_speed.py, profile_kernels.py, gpu_report.py) run here, on
the CPU, so the one prepared command for a GPU machine is not broken when a GPU session finally runs it."""

from __future__ import annotations

import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import ModuleType

import pytest
import torch
from _train_helpers import TINY_A, write_arch

from gpunet.bench import BenchmarkConfig, benchmark

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "gpu_check.sh"
STEPS = ("environment", "bench_models", "bench_d1", "profile", "train_speed", "torchrun_ddp", "pytest", "bench_peers",
         "train_compile", "bench_d1_compiled")

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"gpunet_scripts_{name}", ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run_script(*args: str, out: Path, budget: int = 450, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out), "GPU_CHECK_BUDGET": str(budget),
           "OMP_NUM_THREADS": "1"}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, env=env, timeout=timeout)


def test_dry_run_lists_every_step(tmp_path: Path) -> None:
    assert os.access(SCRIPT, os.X_OK)
    r = _run_script("--dry-run", out=tmp_path / "out")
    assert r.returncode == 0, r.stderr
    names = [line.split(" ", 1)[0] for line in r.stdout.splitlines()]
    assert [n for n in names if n in STEPS] == list(STEPS) and names[-1] == "report:"
    assert "--device cuda --precision fp16" in r.stdout and "--models all" in r.stdout
    assert "timm:convnext_tiny" in r.stdout and "--batch-sizes 1,16,128" in r.stdout
    assert not (tmp_path / "out").exists()  # a dry run writes nothing
    bad = _run_script("--fast", out=tmp_path / "out")
    assert bad.returncode == 2 and "unknown option --fast" in bad.stderr


def test_train_speed_on_cpu(tmp_path: Path) -> None:
    """`gpunet train`'s loop on generated batches: a record per model, appended to the JSON file."""
    arch = write_arch(tmp_path / "tiny.json", TINY_A)
    out = tmp_path / "train.json"
    speed = _script("train_speed")
    args = ["--models", str(arch), "--device", "cpu", "--batch-size", "2", "--steps", "2", "--warmup", "1",
            "--amp", "none", "--output", str(out)]
    assert speed.main(args) == 0
    assert speed.main([*args, "--channels-last"]) == 0
    recs = json.loads(out.read_text())
    assert [r["channels_last"] for r in recs] == [False, True]
    for r in recs:
        assert r["model"] == str(arch) and r["device"] == "cpu" and r["img_size"] == 32 and r["steps"] == 2
        assert r["images_per_s"] > 0 and math.isfinite(r["train_loss"]) and r["world_size"] == 1
    assert torch.backends.cudnn.benchmark is False  # the script's setting is put back


def test_profile_puts_each_operator_in_its_category(tmp_path: Path) -> None:
    """Convolutions by weight shape, elementwise, pooling, classifier; the times come from a real profile."""
    prof = _script("profile_kernels")
    assert prof.category("aten::conv2d", [[1, 64, 8, 8], [64, 1, 5, 5], [64]]) == "conv depthwise 5x5"
    assert prof.category("aten::conv2d", [[1, 64, 8, 8], [128, 64, 1, 1], [128]]) == "conv pointwise 1x1"
    assert prof.category("aten::conv2d", [[1, 3, 8, 8], [32, 3, 3, 3], [32]]) == "conv dense 3x3"
    assert prof.category("aten::conv2d", [[1, 64, 8, 8], [64, 16, 3, 3], [64]]) == "conv grouped 3x3"
    assert prof.category("aten::silu_", [[1, 8, 4, 4]]).startswith("elementwise")
    assert prof.category("aten::mean", [[1, 8, 4, 4]]).startswith("mean pooling")
    out = tmp_path / "profile.md"
    assert prof.main(["--model", "gpunet_0", "--device", "cpu", "--precision", "fp32", "--img-size", "32",
                      "--backends", "eager,fused,triton-dw", "--batch-sizes", "1", "--iters", "2",
                      "--output", str(out)]) == 0
    text = out.read_text()
    assert "### eager, batch 1" in text and "### fused, batch 1" in text
    assert "### triton-dw, batch 1\n\nskipped: triton-dw: Triton kernels run on CUDA devices" in text
    assert "| conv pointwise 1x1 |" in text and "| conv dense 3x3 |" in text and "| elementwise" in text
    shares = [float(line.split("|")[3].strip(" %")) for line in text.splitlines()
              if line.startswith("| ") and line.split("|")[3].strip().endswith("%")]
    assert shares and sum(shares) == pytest.approx(200.0, abs=0.5)  # two sections, each adding up to 100 %


def test_report_from_a_real_run(tmp_path: Path) -> None:
    """gpu_report.py's tables and targets from a real (tiny, CPU) benchmark run: its numbers, nothing invented."""
    results = benchmark(BenchmarkConfig(models=("gpunet_0", "gpunet_d1"), backends=("eager", "fused"),
                                        batch_sizes=(1,), img_size=32, device="cpu", threads=1, warmup=0, repeats=1))
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(results))
    report = _script("gpu_report")
    text = report.report(report.argparse.Namespace(models=[str(path)], d1=[str(path)], peers=[], train=None,
                                                   steps=None, profile=None, precision="fp32"))
    rec = {(r["model"], r["backend"]): r for r in results["records"]}
    g0 = min((rec[("gpunet_0", b)] for b in ("eager", "fused")), key=lambda r: r["median_ms"])
    eager, fused = (rec[("gpunet_0", b)]["median_ms"] for b in ("eager", "fused"))
    assert f"| gpunet_0 | {eager:.3f} | {fused:.3f} |" in text
    assert f"{g0['median_ms']:.3f} ({g0['backend']})" in text
    assert "| gpunet_d2 | not measured |" in text and "(no training measurements)" in text
    assert "- D1 batch 1 <= 0.5 ms: not measured" in text  # fp16 targets: this run is fp32
    assert "no backend failed" in text


@pytest.mark.slow  # the whole script, tiny, on the CPU: a minute or more (eight processes)
def test_tiny_run_on_cpu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = _run_script("--device", "cpu", "--tiny", out=out, budget=1500, timeout=1800)
    assert r.returncode == 0, r.stderr[-2000:]
    files = sorted(p.name for p in out.iterdir())
    assert len(files) <= 8 and all(p.is_file() for p in out.iterdir())
    assert {"run.log", "steps.txt", "summary.md", "train.json", "bench_models.json"} <= set(files)
    steps = (out / "steps.txt").read_text().splitlines()
    assert [s.split()[0] for s in steps] == list(STEPS)
    assert all(" rc=0 " in s for s in steps), steps
    summary = (out / "summary.md").read_text()
    for section in ("## Targets", "## The seven GPUNets", "## GPUNet-D1 by batch size", "## timm peers",
                    "## Training", "## Where D1's time goes", "| conv depthwise"):
        assert section in summary
    train = json.loads((out / "train.json").read_text())
    assert [(r["ddp"], r["compile"]) for r in train] == [(False, False), (True, False), (False, True)]
    assert all(math.isfinite(r["warmup_loss"]) and math.isfinite(r["train_loss"]) for r in train)
    assert all(r["loss_finite_and_falling"] == (r["train_loss"] < r["warmup_loss"]) for r in train)
