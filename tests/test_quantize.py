"""`gpunet.deploy.quantize`: INT8 QDQ models calibrated on a generated image folder, run in real ONNX Runtime.

Random weights and generated colored-noise images: the top-1 numbers mean nothing; the tests check
that the pipeline runs and reports numbers, not what the numbers are.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _helpers import calibrate_bn
from PIL import Image

import gpunet
from gpunet import cli
from gpunet.cli import quantize as cli_quantize
from gpunet.deploy.common import INPUT_NAME
from gpunet.deploy.metadata import META_LABELS, META_PRECISION, META_PREPROCESS, META_QUANTIZATION, read_metadata
from gpunet.deploy.onnx import export_onnx, onnx_session
from gpunet.deploy.quantize import (
    ImageCalibrationReader,
    QuantReport,
    calibration_images,
    compare_int8,
    format_report,
    onnx_preprocess,
    quantize_onnx,
)
from gpunet.errors import QuantizeError

run_quantize = cli_quantize.run

pytestmark = pytest.mark.usefixtures("single_thread_torch")

IMG = 64
COLORS = {"blue": (60, 60, 200), "green": (60, 200, 60), "red": (200, 60, 60)}


def make_color_folder(root: Path, per_class: int, size: int = 24, seed: int = 0,
                      classes: dict[str, tuple[int, int, int]] = COLORS) -> Path:
    """root/<color>/<i>.png: noise around one color per class."""
    rng = np.random.default_rng(seed)
    for name, rgb in classes.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = np.clip(np.array(rgb) + rng.normal(0, 50, (size, size + 4, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i:03d}.{'png' if i % 2 else 'jpg'}")
    return root


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("colors")
    return {"calib": make_color_folder(root / "calib", 6, seed=1), "val": make_color_folder(root / "val", 5, seed=2)}


@pytest.fixture(scope="module")
def fp32_onnx(tmp_path_factory) -> Path:
    torch.manual_seed(0)
    model = calibrate_bn(gpunet.create_model("gpunet_0", num_classes=3), IMG)  # logits that depend on the image
    path = tmp_path_factory.mktemp("fp32") / "gpunet_0.onnx"
    export_onnx(model, path, img_size=IMG)
    return path


@pytest.fixture(scope="module")
def int8_onnx(fp32_onnx, data, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("int8") / "gpunet_0.int8.onnx"
    assert quantize_onnx(fp32_onnx, out, data["calib"], num_images=12) == out
    return out


def test_int8_model_is_valid_qdq(fp32_onnx, int8_onnx) -> None:
    proto = onnx.load(str(int8_onnx))
    onnx.checker.check_model(proto)
    ops = [n.op_type for n in proto.graph.node]
    assert ops.count("QuantizeLinear") > 10 and ops.count("DequantizeLinear") > 10
    assert "QLinearConv" not in ops  # QDQ format, not QOperator
    inits = {i.name: i for i in proto.graph.initializer}
    int8_weights = [i for i in inits.values() if i.data_type == onnx.TensorProto.INT8 and len(i.dims) == 4]
    assert int8_weights, "conv weights should be stored as int8"
    # per-channel: weight DequantizeLinear nodes carry one scale per output channel
    weight_dq = [n for n in proto.graph.node if n.op_type == "DequantizeLinear" and n.input[0] in inits
                 and inits[n.input[0]].data_type == onnx.TensorProto.INT8 and len(inits[n.input[0]].dims) == 4]
    assert weight_dq and all(len(inits[n.input[1]].dims) == 1 and inits[n.input[1]].dims[0] > 1 for n in weight_dq)
    # activations are uint8 (see the module docstring of gpunet.deploy.quantize for why)
    act_q = [n for n in proto.graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]
    assert act_q and all(inits[n.input[2]].data_type == onnx.TensorProto.UINT8 for n in act_q)
    assert int8_onnx.stat().st_size < 0.4 * fp32_onnx.stat().st_size


def test_int8_metadata_is_carried_over(fp32_onnx, int8_onnx) -> None:
    meta, src = read_metadata(int8_onnx), read_metadata(fp32_onnx)
    assert meta[META_PRECISION] == "int8"
    assert meta[META_LABELS] == src[META_LABELS] and meta[META_PREPROCESS] == src[META_PREPROCESS]
    q = json.loads(meta[META_QUANTIZATION])
    assert q["format"] == "QDQ" and q["calibration_images"] == 12 and "per-channel" in q["weights"]
    assert q["activations"].startswith("uint8")


def test_int8_runs_in_onnx_runtime_close_to_fp32(fp32_onnx, int8_onnx, data) -> None:
    preprocess = onnx_preprocess(int8_onnx)
    paths = calibration_images(data["val"], 6)
    x = np.stack([preprocess(Image.open(p).convert("RGB")).numpy() for p in paths]).astype(np.float32)
    assert x.shape == (6, 3, IMG, IMG)
    fp32 = onnx_session(fp32_onnx, threads=1).run(None, {INPUT_NAME: x})[0]
    int8 = onnx_session(int8_onnx, threads=1).run(None, {INPUT_NAME: x})[0]
    assert int8.shape == fp32.shape == (6, 3) and np.isfinite(int8).all()
    assert np.ptp(fp32, axis=0).max() > 0.1 * np.abs(fp32).max()  # the images' logits differ
    # a loose sanity bound: quantization noise, not a different function
    assert np.abs(int8 - fp32).max() <= 0.5 * np.abs(fp32).max() + 1e-6


def test_compare_int8_reports_numbers(fp32_onnx, int8_onnx, data) -> None:
    report = compare_int8(fp32_onnx, int8_onnx, data["val"], threads=1, runs=5, warmup=1)
    assert isinstance(report, QuantReport)
    assert report.images == 15 and report.latency_batch == 1 and not report.failed
    for value in (report.top1_fp32, report.top1_int8, report.top1_delta, report.agreement):
        assert isinstance(value, float) and math.isfinite(value)
    assert 0 <= report.top1_fp32 <= 100 and 0 <= report.top1_int8 <= 100 and 0 <= report.agreement <= 100
    assert report.top1_delta == pytest.approx(report.top1_int8 - report.top1_fp32)
    assert report.latency_ms_fp32 > 0 and report.latency_ms_int8 > 0
    assert report.speedup == pytest.approx(report.latency_ms_fp32 / report.latency_ms_int8)
    assert report.size_bytes_int8 < report.size_bytes_fp32
    text = format_report(report)
    assert "speed-up" in text and "top1" in text
    assert json.loads(json.dumps(report.to_dict()))["images"] == 15
    limited = compare_int8(fp32_onnx, int8_onnx, data["val"], limit=4, threads=1, runs=2, warmup=0)
    assert limited.images == 4


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="openvino is not installed")
def test_compare_int8_in_openvino(fp32_onnx, int8_onnx, data) -> None:
    """OpenVINO runs the same QDQ file with its own INT8 kernels; the float32 model decides as in ONNX Runtime."""
    ov = compare_int8(fp32_onnx, int8_onnx, data["val"], threads=1, runs=3, warmup=1, runtime="openvino")
    ort = compare_int8(fp32_onnx, int8_onnx, data["val"], threads=1, runs=3, warmup=1)
    assert ov.runtime == "openvino" and ov.images == ort.images == 15
    assert ov.top1_fp32 == ort.top1_fp32
    assert ov.latency_ms_fp32 > 0 and ov.latency_ms_int8 > 0
    assert "OpenVINO CPU" in format_report(ov) and "ONNX Runtime CPU" in format_report(ort)
    with pytest.raises(QuantizeError, match="runtime must be one of"):
        compare_int8(fp32_onnx, int8_onnx, data["val"], runtime="tflite")


def test_class_count_mismatch_is_refused(fp32_onnx, int8_onnx, tmp_path) -> None:
    two = make_color_folder(tmp_path / "two", 2, classes={"a": (0, 0, 0), "b": (255, 255, 255)})
    with pytest.raises(QuantizeError, match="need a model with 2 classes"):
        compare_int8(fp32_onnx, int8_onnx, two, threads=1)


def test_calibration_reader_and_image_selection(data, fp32_onnx) -> None:
    all_paths = calibration_images(data["calib"], 1000)
    assert len(all_paths) == 18
    some = calibration_images(data["calib"], 4)
    assert len(some) == 4 and len({Path(p).parent.name for p in some}) >= 2  # spread over the classes
    reader = ImageCalibrationReader(some + [str(data["calib"] / "missing.png")], onnx_preprocess(fp32_onnx),
                                    batch_size=3)
    shapes = [b[INPUT_NAME].shape for b in iter(reader.get_next, None)]
    assert shapes == [(3, 3, IMG, IMG), (1, 3, IMG, IMG)] and reader.used == 4 and len(reader.failed) == 1
    fixed = ImageCalibrationReader(some[:3], onnx_preprocess(fp32_onnx), batch=2)
    assert [b[INPUT_NAME].shape[0] for b in iter(fixed.get_next, None)] == [2, 2]  # padded to the fixed batch


def test_quantize_errors(fp32_onnx, data, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(QuantizeError, match="no calibration images"):
        quantize_onnx(fp32_onnx, tmp_path / "x.onnx", tmp_path / "empty")
    with pytest.raises(FileNotFoundError):
        quantize_onnx(fp32_onnx, tmp_path / "x.onnx", tmp_path / "nowhere")
    with pytest.raises(QuantizeError, match="img_size 96 does not fit"):
        quantize_onnx(fp32_onnx, tmp_path / "x.onnx", data["calib"], img_size=96)
    with pytest.raises(QuantizeError, match="activation_type"):
        quantize_onnx(fp32_onnx, tmp_path / "x.onnx", data["calib"], activation_type="int4")
    model = gpunet.create_model("gpunet_0", num_classes=3)
    export_onnx(model, tmp_path / "fp16.onnx", img_size=32, fp16=True, check=False, exporter="legacy")
    with pytest.raises(QuantizeError, match="fp16 export"):
        quantize_onnx(tmp_path / "fp16.onnx", tmp_path / "x.onnx", data["calib"])
    assert not (tmp_path / "x.onnx").exists()


def test_fixed_batch_model_quantizes_and_compares(data, tmp_path) -> None:
    torch.manual_seed(0)
    model = gpunet.create_model("gpunet_0", num_classes=3)
    fp32 = tmp_path / "b2.onnx"
    export_onnx(model, fp32, img_size=32, batch=2, exporter="legacy")
    int8 = quantize_onnx(fp32, tmp_path / "b2.int8.onnx", data["calib"], num_images=5)
    report = compare_int8(fp32, int8, data["val"], threads=1, runs=2, warmup=0)
    assert report.images == 15 and report.latency_batch == 2  # odd count: the last batch is padded


# ---------------------------------------------------------------------------- CLI functions

def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpunet")
    cli_quantize.register(parser.add_subparsers())
    return parser.parse_args(["quantize", *argv])


def test_cli_quantize_an_onnx_file_with_val(fp32_onnx, data, tmp_path, capsys) -> None:
    out = tmp_path / "q.int8.onnx"
    args = _parse([str(fp32_onnx), "--calibration", str(data["calib"]), "--num-images", "6", "--val",
                   str(data["val"]), "--threads", "1", "-o", str(out)])
    assert run_quantize(args) == 0
    text = capsys.readouterr().out
    assert f"wrote {out}" in text and "INT8 QDQ" in text and "6 calibration images" in text
    assert "delta" in text and "speed-up x" in text
    onnx.checker.check_model(onnx.load(str(out)))


def test_cli_quantize_a_model_name(data, tmp_path, capsys) -> None:
    out, fp32 = tmp_path / "m.int8.onnx", tmp_path / "m.onnx"
    args = _parse(["gpunet_0", "--random-weights", "--img-size", "32", "--calibration", str(data["calib"]),
                   "--num-images", "4", "--val", str(data["val"]), "--limit", "3", "--threads", "1",
                   "--fp32-output", str(fp32), "-o", str(out)])
    assert run_quantize(args) == 0  # the 3 class folders of --val give the random model 3 classes
    captured = capsys.readouterr()
    assert f"wrote {fp32} float32 ONNX" in captured.out and "max abs diff" in captured.out
    assert "3 images" in captured.out and "MEANINGLESS" in captured.err
    assert read_metadata(out)[META_PRECISION] == "int8"


def test_cli_quantize_errors(fp32_onnx, data, tmp_path) -> None:
    with pytest.raises(QuantizeError, match="ONNX file with its weights"):
        run_quantize(_parse([str(fp32_onnx), "--pretrained", "--calibration", str(data["calib"]), "-o",
                             str(tmp_path / "x.onnx")]))
    with pytest.raises(FileNotFoundError, match="calibration"):
        run_quantize(_parse([str(fp32_onnx), "--calibration", str(tmp_path / "none"), "-o", str(tmp_path / "x")]))
    with pytest.raises(FileNotFoundError, match="no such ONNX file"):
        run_quantize(_parse([str(tmp_path / "none.onnx"), "--calibration", str(data["calib"]), "-o",
                             str(tmp_path / "x")]))
    with pytest.raises(SystemExit):
        _parse([str(fp32_onnx), "-o", "x"])  # --calibration is required


def test_old_quantize_path_still_resolves_with_a_deprecation_warning() -> None:
    import gpunet.quantize as old

    with pytest.deprecated_call(match=r"gpunet\.quantize\.quantize_onnx moved to gpunet\.deploy\.quantize"):
        assert old.quantize_onnx is quantize_onnx
    with pytest.deprecated_call():
        assert old.META_QUANTIZATION == META_QUANTIZATION and old.QuantizeError is QuantizeError


def test_cli_choices_agree_with_the_library() -> None:
    """The CLI spells its choices out (so `gpunet --help` imports no torch); they must be the library's."""
    from gpunet.deploy import quantize
    from gpunet.deploy.runtime import RUNTIMES

    assert cli_quantize.DEFAULT_NUM_IMAGES == quantize.DEFAULT_NUM_IMAGES
    assert cli_quantize.ACTIVATION_TYPES == quantize.ACTIVATION_TYPES
    assert cli_quantize.CALIBRATE_METHODS == quantize.CALIBRATE_METHODS
    assert cli_quantize.RUNTIMES == tuple(RUNTIMES)


def test_unreadable_calibration_images_are_reported(fp32_onnx, data, tmp_path, capsys) -> None:
    """Skipped calibration images are said (how many, which, why), counted in the metadata and the CLI line."""
    calib = tmp_path / "calib"
    shutil.copytree(data["calib"], calib)
    (calib / "red" / "broken.png").write_text("not an image")
    out = tmp_path / "q.onnx"
    assert cli.main(["quantize", str(fp32_onnx), "--calibration", str(calib), "--num-images", "100", "-o",
                     str(out)]) == 0
    captured = capsys.readouterr()
    assert "gpunet: 1 of 19 calibration images could not be read and were skipped:" in captured.err
    assert f"{calib / 'red' / 'broken.png'}: not an image file" in captured.err
    assert "18 calibration images, 1 unreadable skipped" in captured.out
    info = json.loads(read_metadata(out)[META_QUANTIZATION])
    assert info["calibration_images"] == 18 and info["calibration_skipped"] == 1
