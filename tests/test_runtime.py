"""Exported files run as models: `Classifier`, `validate`, `gpunet predict/validate --model FILE` in real runtimes.

The reference is always the PyTorch model the file was exported from, on the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from _helpers import calibrate_bn, make_image_folder, run_cli

import gpunet
from gpunet.deploy.metadata import META_LABELS, set_metadata
from gpunet.deploy.onnx import export_onnx
from gpunet.deploy.openvino import export_openvino
from gpunet.deploy.packages import openvino_available
from gpunet.deploy.runtime import ExportedModel, is_exported
from gpunet.errors import ExportError, SettingError
from gpunet.weights import WeightsError

pytestmark = pytest.mark.usefixtures("single_thread_torch")
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")

IMG = 64
CLASSES = {"ant": 3, "bee": 3, "cat": 3}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runtime")
    torch.manual_seed(0)
    model = calibrate_bn(gpunet.create_model("gpunet_0", num_classes=3), IMG)  # logits that depend on the image
    make_image_folder(root / "val", CLASSES)
    out = {"val": root / "val", "onnx": root / "m.onnx", "fixed": root / "b2.onnx", "xml": root / "m.xml"}
    export_onnx(model, out["onnx"], img_size=IMG)
    export_onnx(model, out["fixed"], img_size=IMG, batch=2)
    if openvino_available():
        export_openvino(model, out["xml"], img_size=IMG)
    torch.save(model.state_dict(), root / "model.pt")
    out["model"] = root / "model.pt"
    return out


def _model(files: dict[str, Path]) -> torch.nn.Module:
    model = gpunet.create_model("gpunet_0", num_classes=3).eval()
    model.load_state_dict(torch.load(files["model"], weights_only=True))
    model.pretrained_cfg = {**model.pretrained_cfg, "input_size": (3, IMG, IMG)}
    return model


@pytest.mark.parametrize(("kind", "runtime", "words"), [
    ("onnx", None, "ONNX Runtime"),
    ("fixed", None, "ONNX Runtime"),  # a fixed batch of 2 with batches of 5: padded and split
    pytest.param("xml", None, "OpenVINO", marks=needs_openvino),
    pytest.param("onnx", "openvino", "OpenVINO", marks=needs_openvino),
])
def test_validate_exported_equals_pytorch(files, kind, runtime, words) -> None:
    ref = gpunet.validate(_model(files), files["val"], device="cpu", batch_size=5, workers=0, progress=False)
    got = gpunet.validate(files[kind], files["val"], device="cpu", batch_size=5, workers=0, progress=False,
                          runtime=runtime)
    assert got.count == ref.count == 9
    assert (got.top1, got.top5) == (ref.top1, ref.top5)
    assert got.loss == pytest.approx(ref.loss, rel=1e-5)
    assert got.img_size == IMG and got.num_classes == 3
    assert got.weights == f"{files[kind]} ({words}, fp32)"


def test_classifier_uses_the_files_labels_and_matches_pytorch(files, tmp_path) -> None:
    proto = onnx.load(str(files["onnx"]))
    set_metadata(proto, {META_LABELS: json.dumps(["ant", "bee", "cat"])})
    onnx.save(proto, str(tmp_path / "named.onnx"))
    images = sorted(files["val"].rglob("*.*"))
    ref = gpunet.Classifier(_model(files), device="cpu", workers=0).predict(images, top_k=3)
    got = gpunet.Classifier(tmp_path / "named.onnx", device="cpu", workers=0).predict(images, top_k=3)
    for r, g in zip(ref, got, strict=True):
        assert [t.index for t in g.topk] == [t.index for t in r.topk]
        assert [t.prob for t in g.topk] == pytest.approx([t.prob for t in r.topk], abs=1e-6)
        assert [t.label for t in g.topk] == [["ant", "bee", "cat"][t.index] for t in r.topk]


def test_exported_model_interface(files) -> None:
    model = ExportedModel(files["fixed"])
    assert model.runtime == "onnxruntime" and model.fixed_batch == 2 and model.num_classes == 3
    assert model.pretrained_cfg["input_size"] == (3, IMG, IMG) and model.pretrained_cfg["architecture"] == "gpunet_0"
    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        got, ref = model(x), _model(files)(x)
    assert (ref[0] - ref[1]).abs().max() > 0.1 * ref.abs().max()
    assert (got - ref).abs().max() <= 1e-4 * ref.abs().max()
    assert is_exported("a/b.XML") and is_exported(Path("m.onnx")) and not is_exported("gpunet_d1")


def test_wrong_uses_are_clear_errors(files, tmp_path) -> None:
    with pytest.raises(ValueError, match="exported model with its own weights"):
        gpunet.Classifier(files["onnx"], weights="x.pth")
    with pytest.raises(ExportError, match=f"exported for {IMG} px"):
        gpunet.Classifier(files["onnx"], img_size=96)
    with pytest.raises(ExportError, match="--amp applies to PyTorch models"):
        gpunet.validate(files["onnx"], files["val"], amp=True)
    # was silently ignored
    with pytest.raises(ExportError, match="--channels-last applies to PyTorch models"):
        gpunet.validate(files["onnx"], files["val"], channels_last=True)
    with pytest.raises(ExportError, match="--channels-last applies to PyTorch models"):
        gpunet.Classifier(files["onnx"], channels_last=True)
    with pytest.raises(ValueError, match="applies to exported files"):
        gpunet.Classifier("gpunet_0", random_weights=True, runtime="openvino")
    with pytest.raises(ExportError, match="runtime must be one of"):
        ExportedModel(files["onnx"], runtime="tvm")
    two = tmp_path / "two"
    make_image_folder(two, {"a": 1, "b": 1})
    with pytest.raises(WeightsError, match="classifies 3 classes but 2 are needed"):
        gpunet.validate(files["onnx"], two, workers=0)
    bare = onnx.load(str(files["onnx"]))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ExportError, match="bare.onnx: has no gpunet metadata"):
        gpunet.Classifier(tmp_path / "bare.onnx")
    with pytest.raises(FileNotFoundError, match="no such exported model"):
        gpunet.Classifier(tmp_path / "missing.onnx")


def test_cli_predict_and_validate_run_the_exported_file(files) -> None:
    kind, runtime = ("xml", []) if openvino_available() else ("onnx", ["--runtime", "onnxruntime"])
    r = run_cli(["predict", files["val"] / "ant", "--model", files[kind], *runtime, "--format", "json", "--top-k", "2"])
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["model"] == files[kind].name and len(out["results"]) == 3
    assert all(len(res["topk"]) == 2 for res in out["results"])
    r = run_cli(["validate", files["val"], "--model", files["onnx"], "--workers", "0"])
    assert r.returncode == 0, r.stderr
    assert f"weights     {files['onnx']} (ONNX Runtime, fp32)" in r.stdout and "top1" in r.stdout
    r = run_cli(["predict", files["val"] / "ant", "--model", files["onnx"], "--pretrained"])
    assert r.returncode == 2 and "gpunet: error:" in r.stderr and "its own weights" in r.stderr
    assert "Traceback" not in r.stderr


# ---------------------------------------------------------------------------- open_runner, the one runner registry

def test_open_runner_onnxruntime(files, tmp_path) -> None:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from gpunet.deploy.runtime import RuntimeUnavailableError, open_runner

    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        expected = _model(files)(x).numpy()
    runner = open_runner(files["fixed"], threads=1)
    assert runner.fixed_batch == 2 and runner.input_dtype is np.float32
    assert runner.description == "ONNX Runtime, CPUExecutionProvider"
    assert np.abs(runner(x.numpy()) - expected).max() <= 1e-4 * np.abs(expected).max()
    # an fp16 file with float16 inputs (as the search's latency model may write): the runner casts
    fp16 = tmp_path / "io16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(files["onnx"]))), str(fp16))
    half = open_runner(fp16, "onnxruntime", threads=1)
    assert half.input_dtype is np.float16 and half.fixed_batch is None
    assert np.abs(half(x.numpy()).astype(np.float32) - expected).max() <= 5e-2 * np.abs(expected).max()
    import onnxruntime as ort

    if not torch.cuda.is_available():
        with pytest.raises(SettingError, match="no CUDA GPU"):
            open_runner(files["onnx"], "onnxruntime", device="cuda")
    elif "CUDAExecutionProvider" not in ort.get_available_providers():
        with pytest.raises(RuntimeUnavailableError, match="CUDAExecutionProvider is not available"):
            open_runner(files["onnx"], "onnxruntime", device="cuda")
    with pytest.raises(ExportError, match="runtime must be one of"):
        open_runner(files["onnx"], "tvm")


@needs_openvino
def test_open_runner_openvino_static_batch_and_precision(files) -> None:
    from gpunet.deploy.runtime import RuntimeUnavailableError, open_runner

    x = torch.randn(3, 3, IMG, IMG)
    with torch.no_grad():
        expected = _model(files)(x).numpy()
    runner = open_runner(files["xml"], threads=1, batch=3)
    assert runner.fixed_batch == 3 and "f32 inference precision" in runner.description
    first = runner(x.numpy())
    assert np.abs(first - expected).max() <= 1e-4 * np.abs(expected).max()
    runner(np.zeros((3, 3, IMG, IMG), np.float32))  # the reused request does not overwrite earlier results
    assert np.array_equal(first, runner(x.numpy()))
    assert open_runner(files["onnx"], "openvino", threads=1).fixed_batch is None
    with pytest.raises(RuntimeUnavailableError if torch.cuda.is_available() else SettingError, match="CPU|CUDA"):
        open_runner(files["xml"], device="cuda")
    with pytest.raises(ExportError, match="precision must be one of"):
        open_runner(files["xml"], precision="int4")


def test_old_runtime_path_still_resolves_with_a_deprecation_warning() -> None:
    import gpunet.runtime as old

    with pytest.deprecated_call(match=r"gpunet\.runtime\.ExportedModel moved to gpunet\.deploy\.runtime"):
        assert old.ExportedModel is ExportedModel
    with pytest.deprecated_call():
        assert old.is_exported is is_exported
