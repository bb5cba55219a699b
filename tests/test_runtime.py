"""Exported files run as models: `Classifier`, `validate`, `gpunet predict/validate --model FILE` in real runtimes.

The reference is always the PyTorch model the file was exported from, on the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import onnx
import pytest
import torch
from _helpers import make_image_folder, run_cli

import gpunet
from gpunet.export import META_LABELS, ExportError, export_onnx, export_openvino, openvino_available, set_metadata
from gpunet.runtime import ExportedModel, is_exported
from gpunet.weights import WeightsError

pytestmark = pytest.mark.usefixtures("single_thread_torch")
needs_openvino = pytest.mark.skipif(not openvino_available(), reason="openvino is not installed")

IMG = 64
CLASSES = {"ant": 3, "bee": 3, "cat": 3}


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runtime")
    torch.manual_seed(0)
    model = gpunet.create_model("gpunet_0", num_classes=3).eval()
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
        assert torch.allclose(model(x), _model(files)(x), atol=1e-5)
    assert is_exported("a/b.XML") and is_exported(Path("m.onnx")) and not is_exported("gpunet_d1")


def test_wrong_uses_are_clear_errors(files, tmp_path) -> None:
    with pytest.raises(ValueError, match="exported model with its own weights"):
        gpunet.Classifier(files["onnx"], weights="x.pth")
    with pytest.raises(ExportError, match=f"exported for {IMG} px"):
        gpunet.Classifier(files["onnx"], img_size=96)
    with pytest.raises(ExportError, match="--amp applies to PyTorch models"):
        gpunet.validate(files["onnx"], files["val"], amp=True)
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
