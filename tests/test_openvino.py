"""OpenVINO: the IR export of `gpunet export --format openvino` computes what PyTorch computes, in real OpenVINO.

Random weights throughout (what is tested is the file, not accuracy). Skipped where the optional
`openvino` package is not installed, except the test of the error that then tells what to install.
"""

from __future__ import annotations

import argparse
import ctypes
import subprocess
import sys

import numpy as np
import pytest
import torch
from _helpers import calibrate_bn, models_default_and_slow

import gpunet
from gpunet.cli import export as cli_export
from gpunet.deploy.metadata import META_PRECISION, META_PREPROCESS, read_metadata
from gpunet.deploy.onnx import export_onnx
from gpunet.deploy.openvino import SignalStack, export_openvino, openvino_model
from gpunet.deploy.packages import openvino_available
from gpunet.errors import ExportError

run_export = cli_export.run

pytestmark = pytest.mark.usefixtures("single_thread_torch")
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")

IMG = 64


@pytest.fixture(scope="module")
def gpunet0() -> torch.nn.Module:
    torch.manual_seed(0)
    return gpunet.create_model("gpunet_0").eval()


def _logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(x)).numpy()


@needs_openvino
@pytest.mark.parametrize("name", models_default_and_slow())
def test_ir_matches_pytorch_for_every_released_model(name: str, tmp_path) -> None:
    torch.manual_seed(0)
    model = calibrate_bn(gpunet.create_model(name), IMG)  # a live signal: logits that depend on the image
    path = tmp_path / f"{name}.xml"
    report = export_openvino(model, path, img_size=IMG, threads=1)
    assert path.is_file() and (tmp_path / f"{name}.bin").is_file()
    assert report.format == "openvino" and report.batch_sizes == (1, 3)
    assert report.max_abs_diff is not None and report.tolerance is not None
    assert report.max_abs_diff <= report.tolerance
    x = np.random.default_rng(1).standard_normal((2, 3, IMG, IMG), dtype=np.float32)
    got = openvino_model(path, threads=1)(x)[0]
    expected = _logits(model, x)
    assert np.abs(expected[0] - expected[1]).max() > 0.1 * np.abs(expected).max()
    assert np.abs(got - expected).max() <= 1e-4 * np.abs(expected).max()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"{name}.bin", f"{name}.xml"]  # no temporary left


@needs_openvino
def test_metadata_travels_in_the_ir(gpunet0, tmp_path) -> None:
    path = tmp_path / "g0.xml"
    export_openvino(gpunet0, path, img_size=IMG, check=False)
    meta = read_metadata(path)
    assert meta["gpunet.model"] == "gpunet_0" and meta["gpunet.num_classes"] == "1000"
    assert meta[META_PREPROCESS]["input_size"] == [3, IMG, IMG]
    assert meta["gpunet.labels"][1].startswith("goldfish")
    assert meta["gpunet.architecture"] == gpunet0.arch.to_json()
    assert meta[META_PRECISION] == "fp32" and meta["gpunet.fused"] == "true"


@needs_openvino
def test_fixed_batch_and_fp16_weights(gpunet0, tmp_path) -> None:
    fp32 = export_openvino(gpunet0, tmp_path / "fp32.xml", img_size=IMG, batch=2, check=False)
    fp16 = export_openvino(gpunet0, tmp_path / "fp16.xml", img_size=IMG, batch=2, fp16=True, threads=1)
    assert fp16.batch == 2 and fp16.batch_sizes == (2,)
    assert fp16.max_abs_diff is not None and fp16.tolerance is not None and fp16.max_abs_diff <= fp16.tolerance
    assert fp16.size_bytes < 0.6 * fp32.size_bytes
    compiled = openvino_model(tmp_path / "fp16.xml", threads=1)
    assert list(compiled.inputs[0].get_shape()) == [2, 3, IMG, IMG]
    assert read_metadata(tmp_path / "fp16.xml")[META_PRECISION] == "fp16"


@needs_openvino
def test_a_failed_check_leaves_the_old_files(gpunet0, tmp_path) -> None:
    target = tmp_path / "strict.xml"
    with pytest.raises(ExportError, match="OpenVINO disagrees with PyTorch.*nothing was written"):
        export_openvino(gpunet0, target, img_size=32, fp16=True, rtol=1e-9)
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")
    with pytest.raises(ExportError):
        export_openvino(gpunet0, target, img_size=32, fp16=True, rtol=1e-9)
    assert target.read_bytes() == b"old" and sorted(p.name for p in tmp_path.iterdir()) == ["strict.xml"]


@needs_openvino
def test_static_batch_precision_and_errors_of_openvino_model(gpunet0, tmp_path) -> None:
    path = tmp_path / "g0.xml"
    export_openvino(gpunet0, path, img_size=32, check=False)
    x = np.random.default_rng(0).standard_normal((3, 3, 32, 32), dtype=np.float32)
    expected = _logits(gpunet0, x)
    fixed = openvino_model(path, batch=3, threads=1)
    assert list(fixed.inputs[0].get_shape()) == [3, 3, 32, 32]
    assert np.abs(fixed(x)[0] - expected).max() <= 1e-4 * np.abs(expected).max()
    bf16 = openvino_model(path, precision="bf16", threads=1)
    # f32 where the CPU has no bf16 instructions
    assert bf16.get_property("INFERENCE_PRECISION_HINT").get_type_name() in ("bf16", "f32")
    assert np.isfinite(bf16(x)[0]).all()
    assert openvino_model(path, threads=1).get_property("INFERENCE_PRECISION_HINT").get_type_name() == "f32"
    with pytest.raises(ExportError, match="precision must be one of"):
        openvino_model(path, precision="int4")
    with pytest.raises(FileNotFoundError, match="no such OpenVINO"):
        openvino_model(tmp_path / "missing.xml")
    (tmp_path / "bad.xml").write_text("not a model")
    for read in (openvino_model, read_metadata):
        with pytest.raises(ExportError, match=r"bad\.xml: OpenVINO cannot read this file as a model"):
            read(tmp_path / "bad.xml")
    with pytest.raises(ExportError, match=r"\.xml file"):
        export_openvino(gpunet0, tmp_path / "model.onnx", img_size=32)


def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpunet")
    cli_export.register(parser.add_subparsers())
    return parser.parse_args(["export", *argv])


@needs_openvino
def test_cli_openvino_export(tmp_path, capsys) -> None:
    out = tmp_path / "m.xml"
    assert run_export(_parse(["gpunet_0", "--random-weights", "--img-size", "32", "--format", "openvino",
                              "-o", str(out)])) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and f"wrote {tmp_path / 'm.bin'}" in printed
    assert "OpenVINO vs PyTorch: max abs diff" in printed


def test_without_openvino_the_error_says_what_to_install(gpunet0, tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(sys.modules, "openvino", None)  # what `import openvino` meets where it is not installed
    with pytest.raises(ExportError, match=r"pip install 'gpunet\[openvino\]'"):
        export_openvino(gpunet0, tmp_path / "m.xml", img_size=32)
    with pytest.raises(ExportError, match=r"gpunet\[openvino\]"):
        run_export(_parse(["gpunet_0", "--format", "openvino", "-o", str(tmp_path / "m.xml")]))
    assert not openvino_available()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ImportError, match=r"gpunet\[openvino\]"):  # also an ImportError (MissingDependencyError)
        openvino_model(tmp_path / "m.xml")


# ---------------------------------------------------------------------------- signal stack (a crash, fixed)

def _signal_stack() -> tuple[int, int, int]:
    s = SignalStack()
    assert ctypes.CDLL(None).sigaltstack(None, ctypes.byref(s)) == 0
    return (s.ss_sp or 0, s.ss_flags, s.ss_size)


REPRO = """
import signal, subprocess, sys
from gpunet.deploy.quantize import compare_int8
signal.signal(signal.SIGCHLD, lambda signum, frame: None)  # as torch's DataLoader with workers does
compare_int8(sys.argv[1], sys.argv[1], sys.argv[2], threads=1, runs=2, warmup=1, runtime="openvino")
for _ in range(3):
    subprocess.run([sys.executable, "-c", "print('x' * 1000)"], capture_output=True, text=True, check=True)
    junk = [float(i) * 1.5 for i in range(100_000)]
print("ok")
"""


@needs_openvino
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="sigaltstack via the C library: Linux")
def test_compiling_leaves_the_threads_signal_stack_alone(gpunet0, tmp_path) -> None:
    """OpenVINO installs an alternate signal stack when compiling and may free it while installed."""
    path = tmp_path / "g0.xml"
    export_openvino(gpunet0, path, img_size=32, check=False)
    before = _signal_stack()
    compiled = openvino_model(path, threads=1)
    compiled(np.zeros((1, 3, 32, 32), np.float32))
    assert _signal_stack() == before


@needs_openvino
def test_python_signal_handlers_survive_openvino(gpunet0, tmp_path) -> None:
    """A real process: a Python SIGCHLD handler, OpenVINO models that come and go, then child processes.

    Before the fix this process died with a segmentation fault (the handler ran on freed memory).
    """
    from _helpers import make_image_folder

    export_onnx(gpunet.create_model("gpunet_0", num_classes=3), tmp_path / "m.onnx", img_size=32, check=False)
    make_image_folder(tmp_path / "val", {"a": 2, "b": 2, "c": 2})
    proc = subprocess.run([sys.executable, "-c", REPRO, str(tmp_path / "m.onnx"), str(tmp_path / "val")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-2000:]}"
    assert proc.stdout.strip().endswith("ok")
