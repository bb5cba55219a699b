"""End to end: a tiny search (tiny space, 24-64 px images, two Ray workers on CPU) is killed, resumed and
completed; every front architecture builds, trains one step and exports to ONNX."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from _train_helpers import PYTHON, env, make_dataset

pytest.importorskip("ray")

TRIALS = 8
# the killed-and-resumed search takes a minute or more of two CPU cores, and its 4 ms budget needs a quiet
# machine: with `-m slow` (`make test-all`)
SLOW = pytest.mark.slow


def _cmd(data: Path, out: Path) -> list[str]:
    return [PYTHON, "-m", "gpunet", "search", "--data", str(data), "-o", str(out), "--budget-ms", "4",
            "--device", "cpu", "--batch-size", "1", "--trials", str(TRIALS), "--epochs-per-trial", "1",
            "--space", "tiny", "--population", "4", "--workers", "2", "--calib-archs", "3", "--holdout-archs", "3",
            "--reference-models", "gpunet_0", "--train-batch-size", "8", "--seed", "3"]


def _lines(path: Path) -> list[str]:
    return path.read_text().splitlines() if path.exists() else []


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("search")
    data = make_dataset(root / "data", classes=2, train_per_class=8, val_per_class=4, size=24)
    out = root / "out"
    cand = out / "candidates.jsonl"
    # 1st run: killed (SIGKILL, whole process group) once >= 2 candidates are finished
    proc = subprocess.Popen(_cmd(data, out), cwd=root, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    deadline = time.time() + 150
    try:
        while len(_lines(cand)) < 2:
            assert proc.poll() is None, f"search ended before it was killed:\n{proc.stdout.read()}"  # type: ignore
            assert time.time() < deadline, "no two finished candidates within 150 s"
            time.sleep(0.2)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        proc.stdout.close()  # type: ignore[union-attr]
    before = [json.loads(line)["key"] for line in _lines(cand)]
    assert 2 <= len(before) < TRIALS
    (root / "killed_keys.json").write_text(json.dumps(before))
    # 2nd run: same command, resumes and completes
    done = subprocess.run(_cmd(data, out), cwd=root, env=env(), capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "resuming the search" in done.stdout
    assert f"{len(before)} finished candidate(s) on disk are not re-evaluated" in done.stdout
    return out


@SLOW
def test_resume_does_not_repeat_finished_candidates(searched: Path) -> None:
    before = json.loads((searched.parent / "killed_keys.json").read_text())
    records = [json.loads(line) for line in _lines(searched / "candidates.jsonl")]
    keys = [r["key"] for r in records]
    assert len(keys) == TRIALS and len(set(keys)) == TRIALS  # complete, no candidate twice
    starts = [line.split()[1] for line in _lines(searched / "trials.log")]
    for key in before:  # finished before the kill -> trained exactly once
        assert starts.count(key) == 1, key
    for r in records:
        assert 0.0 <= r["accuracy"] <= 100.0 and r["predicted_ms"] <= 4 * 1.1


@SLOW
def test_outputs(searched: Path) -> None:
    for name in ("candidates.jsonl", "front.csv", "search_plot.png", "summary.json", "summary.md", "space.json",
                 "latency_lut.json", "state.json"):
        assert (searched / name).is_file(), name
    summary = json.loads((searched / "summary.json").read_text())
    assert summary["trials_evaluated"] == TRIALS
    assert -1.0 <= summary["predictor"]["spearman"] <= 1.0 and summary["predictor"]["mape"] >= 0
    assert summary["references_ms"]["gpunet_0"] > 0
    with open(searched / "front.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and len(rows) == len(summary["front"])
    for r in rows:  # every front member was measured for real and is within the budget
        assert float(r["measured_ms"]) <= 4.0
    lat = [float(r["measured_ms"]) for r in rows]
    acc = [float(r["accuracy"]) for r in rows]
    assert lat == sorted(lat) and all(a < b for a, b in zip(acc, acc[1:], strict=False))  # a true front


@SLOW
def test_front_architectures_build_train_and_export(searched: Path, tmp_path: Path) -> None:
    from gpunet.deploy.onnx import export_onnx
    from gpunet.zoo import create_model

    files = sorted((searched / "front").glob("*.json"))
    assert files
    for path in files:
        model = create_model(str(path))
        assert model.num_classes == 2
        res = model.arch.img_resolution
        x, y = torch.randn(4, 3, res, res), torch.tensor([0, 1, 0, 1])
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
        export_onnx(model.eval(), tmp_path / f"{path.stem}.onnx", check=True)


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gpunet.cli import main

    assert main(["search", "--data", str(tmp_path), "-o", str(tmp_path / "o"), "--budget-ms", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpunet: error:") and "train/ and val/" in err
    data = make_dataset(tmp_path / "d", classes=2, train_per_class=1, val_per_class=1, size=8)
    code = main(["search", "--data", str(data), "-o", str(tmp_path / "o"), "--budget-ms", "1", "--space", "nope"])
    assert code == 2 and "unknown search space" in capsys.readouterr().err


def test_a_dataset_smaller_than_one_batch_is_refused_before_any_work(tmp_path: Path) -> None:
    """Used to end in a 38-line Ray traceback after the whole latency phase had run."""
    data = make_dataset(tmp_path / "data", classes=2, train_per_class=3, val_per_class=1, size=24)
    started = time.time()
    done = subprocess.run([PYTHON, "-m", "gpunet", "search", "--data", str(data), "-o", str(tmp_path / "out"),
                           "--space", "tiny", "--device", "cpu", "--train-batch-size", "8", "--budget-ms", "4"],
                          env=env(), capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip().splitlines()[-1] == (
        f"gpunet: error: --data {data}: train/ has 6 images, fewer than one training batch (--train-batch-size 8); "
        "lower --train-batch-size or add images")
    assert "Traceback" not in done.stderr and time.time() - started < 60
