"""`gpunet.deploy` exporters: ONNX (checked in real ONNX Runtime), TorchScript, a Triton repository, the TensorRT error.

Random weights throughout: what is tested is that the exported file computes what PyTorch computes.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from _helpers import calibrate_bn, models_default_and_slow

import gpunet
from gpunet.blocks import is_fused
from gpunet.classify import RandomWeightsError
from gpunet.cli import export as cli_export
from gpunet.deploy.common import INPUT_NAME, OUTPUT_NAME, ExportReport
from gpunet.deploy.metadata import (
    META_ARCHITECTURE,
    META_LABELS,
    META_MODEL,
    META_PRECISION,
    META_PREPROCESS,
    META_VERSION,
    read_metadata,
)
from gpunet.deploy.onnx import export_onnx, onnx_session
from gpunet.deploy.tensorrt import engine_runner, export_tensorrt, tensorrt_available
from gpunet.deploy.torchscript import export_torchscript
from gpunet.deploy.triton import export_triton, export_triton_report
from gpunet.errors import ExportError

run_export = cli_export.run

pytestmark = pytest.mark.usefixtures("single_thread_torch")

IMG = 64


def _dims(value: Any) -> list[int | str]:
    return [d.dim_param if d.dim_param else d.dim_value for d in value.type.tensor_type.shape.dim]


def _torch_logits(model: torch.nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model.eval()(torch.from_numpy(x)).numpy()


@pytest.fixture(scope="module")
def gpunet0() -> torch.nn.Module:
    torch.manual_seed(0)
    return gpunet.create_model("gpunet_0")


@pytest.fixture(scope="module")
def gpunet0_onnx(gpunet0, tmp_path_factory) -> tuple[Path, ExportReport]:
    path = tmp_path_factory.mktemp("onnx") / "gpunet_0.onnx"
    return path, export_onnx(gpunet0, path, img_size=IMG)


# ---------------------------------------------------------------------------- ONNX parity, every released model

@pytest.mark.parametrize("name", models_default_and_slow())
def test_onnx_matches_pytorch_in_onnx_runtime(name: str, tmp_path) -> None:
    """Released models (both block families, both head paths) at batch 1 and 3: G0 and D1 by default, all seven
    with -m slow."""
    torch.manual_seed(1)
    model = calibrate_bn(gpunet.create_model(name), IMG)  # a live signal: logits that depend on the image
    path = tmp_path / f"{name}.onnx"
    report = export_onnx(model, path, img_size=IMG)
    assert report.batch_sizes == (1, 3)
    assert report.max_abs_diff is not None and report.tolerance is not None
    assert report.max_abs_diff <= report.tolerance
    assert report.size_bytes == path.stat().st_size > 1_000_000
    assert report.opset == 18 and report.batch == "dynamic" and report.fused and not report.fp16
    # an independent check, against the *unfused* model the caller holds
    session = onnx_session(path, threads=1)
    x = np.random.default_rng(0).standard_normal((2, 3, IMG, IMG)).astype(np.float32)
    got = session.run([OUTPUT_NAME], {INPUT_NAME: x})[0]
    expected = _torch_logits(model, x)
    assert got.shape == (2, 1000) and np.abs(expected[0] - expected[1]).max() > 0.1 * np.abs(expected).max()
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


def test_export_does_not_touch_the_callers_model(tmp_path) -> None:
    torch.manual_seed(0)
    model = gpunet.create_model("gpunet_d1").train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bn_before = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    export_onnx(model, tmp_path / "d1.onnx", img_size=IMG, check=False)
    assert model.training and not is_fused(model)
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == bn_before > 0
    after = model.state_dict()
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)


# ---------------------------------------------------------------------------- graph interface and metadata

def test_dynamic_batch_axis_names_and_shapes(gpunet0_onnx) -> None:
    path, _ = gpunet0_onnx
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == [INPUT_NAME]
    assert [o.name for o in proto.graph.output] == [OUTPUT_NAME]
    assert _dims(proto.graph.input[0]) == ["batch", 3, IMG, IMG]
    assert _dims(proto.graph.output[0]) == ["batch", 1000]
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert not any(i.data_location == onnx.TensorProto.EXTERNAL for i in proto.graph.initializer)  # one file
    session = onnx_session(path, threads=1)
    for b in (1, 5):
        out = session.run(None, {INPUT_NAME: np.zeros((b, 3, IMG, IMG), np.float32)})[0]
        assert out.shape == (b, 1000)


def test_metadata_is_present_and_parseable(gpunet0, gpunet0_onnx) -> None:
    path, _ = gpunet0_onnx
    meta = read_metadata(path)
    assert gpunet.read_json(meta[META_ARCHITECTURE]) == gpunet0.arch
    pre = meta[META_PREPROCESS]
    assert pre == {"input_size": [3, IMG, IMG], "crop_pct": 1.0, "interpolation": "bicubic",
                   "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}
    labels = meta[META_LABELS]
    assert len(labels) == 1000 and labels[0] == "tench, Tinca tinca"
    assert meta[META_VERSION] == gpunet.__version__
    assert meta[META_MODEL] == "gpunet_0" and meta[META_PRECISION] == "fp32"
    # and the raw props are plain JSON strings any ONNX consumer can read
    raw = {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}
    assert json.loads(raw[META_PREPROCESS])["crop_pct"] == 1.0


def test_metadata_of_a_custom_model_and_class_count(tmp_path) -> None:
    torch.manual_seed(0)
    model = gpunet.create_model("gpunet_p0", num_classes=7)
    model.pretrained_cfg = {}  # as if from a custom architecture: the eval defaults apply
    path = tmp_path / "p0.onnx"
    report = export_onnx(model, path, img_size=48)
    meta = read_metadata(path)
    assert meta[META_LABELS] == [f"class_{i}" for i in range(7)]
    assert meta[META_PREPROCESS]["input_size"] == [3, 48, 48]
    assert meta[META_MODEL] == "custom"
    assert _dims(onnx.load(str(path)).graph.output[0]) == ["batch", 7]
    assert report.max_abs_diff is not None and report.max_abs_diff <= report.tolerance  # type: ignore[operator]


def test_fixed_batch_export_has_a_fixed_dim(gpunet0, tmp_path) -> None:
    path = tmp_path / "b2.onnx"
    report = export_onnx(gpunet0, path, img_size=IMG, batch=2, exporter="legacy")
    assert report.batch == 2 and report.batch_sizes == (2,) and report.exporter == "legacy"
    assert report.opset == 17
    proto = onnx.load(str(path))
    assert _dims(proto.graph.input[0]) == [2, 3, IMG, IMG]
    assert _dims(proto.graph.output[0]) == [2, 1000]
    session = onnx_session(path, threads=1)
    assert session.run(None, {INPUT_NAME: np.zeros((2, 3, IMG, IMG), np.float32)})[0].shape == (2, 1000)
    with pytest.raises(Exception, match="(?i)dimension|shape"):
        session.run(None, {INPUT_NAME: np.zeros((3, 3, IMG, IMG), np.float32)})


def test_fp16_export_runs_in_onnx_runtime_cpu(gpunet0, gpunet0_onnx, tmp_path) -> None:
    path = tmp_path / "fp16.onnx"
    report = export_onnx(gpunet0, path, img_size=IMG, fp16=True)
    fp32_size = gpunet0_onnx[1].size_bytes
    assert report.fp16 and report.size_bytes < 0.6 * fp32_size  # float16 weights
    assert report.max_abs_diff is not None and report.max_abs_diff <= report.tolerance  # type: ignore[operator]
    proto = onnx.load(str(path))
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # clients still send fp32
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert read_metadata(path)[META_PRECISION] == "fp16"


def test_opset_below_18_uses_the_torchscript_exporter(gpunet0, tmp_path) -> None:
    report = export_onnx(gpunet0, tmp_path / "o13.onnx", img_size=32, opset=13, check=False)
    assert report.opset == 13 and report.exporter == "legacy"
    assert onnx.load(str(tmp_path / "o13.onnx")).opset_import[0].version == 13


def test_a_failed_check_leaves_no_file(gpunet0, tmp_path) -> None:
    """float16 differs from float32 by far more than 1e-9 x max |logit|: the check must refuse it."""
    target = tmp_path / "strict.onnx"
    with pytest.raises(ExportError, match="disagrees with PyTorch.*nothing was written"):
        export_onnx(gpunet0, target, img_size=32, fp16=True, rtol=1e-9, exporter="legacy")
    assert list(tmp_path.iterdir()) == []
    target.write_bytes(b"old")  # an existing file survives a failed export untouched
    with pytest.raises(ExportError):
        export_onnx(gpunet0, target, img_size=32, fp16=True, rtol=1e-9, exporter="legacy")
    assert target.read_bytes() == b"old"


def test_unfused_export_keeps_parity(gpunet0, tmp_path) -> None:
    report = export_onnx(gpunet0, tmp_path / "unfused.onnx", img_size=IMG, fuse=False, exporter="legacy")
    assert not report.fused
    assert report.max_abs_diff is not None and report.max_abs_diff <= report.tolerance  # type: ignore[operator]
    assert read_metadata(tmp_path / "unfused.onnx")["gpunet.fused"] == "false"


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"batch": "many"}, "batch must be 'dynamic' or a positive integer"),
    ({"batch": 0}, "batch must be 'dynamic' or a positive integer"),
    ({"img_size": 16}, "too small"),
    ({"exporter": "magic"}, "exporter must be"),
    # opsets torch emits but ONNX Runtime cannot run (was: a late load error after ORT's log spam), and past the
    # installed onnx (was: a traceback from onnx's version converter and "produced opset 18, not 30")
    ({"opset": 6}, rf"opset 6: gpunet exports ONNX opsets 7 to {onnx.defs.onnx_opset_version()} "),
    ({"opset": 0, "exporter": "legacy"}, "opset 0: gpunet exports ONNX opsets 7 to"),
    ({"opset": onnx.defs.onnx_opset_version() + 2}, "the newest the installed onnx .* knows"),
    ({"opset": 17.0}, "opset 17.0: gpunet exports"),
])
def test_bad_arguments_are_export_errors(gpunet0, tmp_path, kwargs, message) -> None:
    with pytest.raises(ExportError, match=message):
        export_onnx(gpunet0, tmp_path / "x.onnx", **kwargs)
    assert not (tmp_path / "x.onnx").exists()
    assert issubclass(ExportError, ValueError)  # cli.main prints ValueErrors as `gpunet: error: ...`


def test_exporters_check_the_output_path_before_any_work(gpunet0, gpunet0_onnx, tmp_path) -> None:
    """An output path that cannot be written is refused, naming it and why, before the model is traced (it never
    runs here); each used to trace and check the model first and then fail with a raw OSError."""
    from gpunet.conversion import convert
    from gpunet.deploy.openvino import export_openvino
    from gpunet.deploy.quantize import quantize_onnx
    from gpunet.errors import QuantizeError, SettingError

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    model = gpunet.create_model("gpunet_0")

    def refuse(*_: Any) -> None:
        raise AssertionError("the model ran before the destination was checked")

    model.register_forward_pre_hook(refuse)
    checkpoint = tmp_path / "gpunet_0.pth.tar"
    torch.save({"state_dict": gpunet0.state_dict()}, checkpoint)
    in_a_file = f"{blocker} is a file, not a folder"
    cases: list[tuple[Any, Path, type[Exception], str]] = [
        (lambda p: export_onnx(model, p), blocker / "m.onnx", ExportError, in_a_file),
        (lambda p: export_onnx(model, p), tmp_path, ExportError, "is a folder; expected a file path"),
        (lambda p: export_torchscript(model, p), blocker / "m.pt", ExportError, in_a_file),
        (lambda p: export_openvino(model, p), blocker / "m.xml", ExportError, in_a_file),
        (lambda p: export_triton(model, p), blocker / "repo", ExportError, in_a_file),
        (lambda p: export_triton(model, p), blocker, ExportError, "is a file; expected a folder"),
        (lambda p: quantize_onnx(gpunet0_onnx[0], p, tmp_path), blocker / "q.onnx", QuantizeError, in_a_file),
        (lambda p: convert(checkpoint, p), blocker / "c.safetensors", SettingError, in_a_file),
    ]
    for export, path, error, message in cases:
        with pytest.raises(error, match=re.escape(f"{path}: {message}")):
            export(path)
    assert sorted(os.listdir(tmp_path)) == ["a-file", "gpunet_0.pth.tar"] and blocker.read_text() == "x"


def test_onnx_session_options(gpunet0_onnx) -> None:
    import onnxruntime as ort

    session = onnx_session(gpunet0_onnx[0], threads=1)
    assert session.get_providers() == ["CPUExecutionProvider"]
    assert session.get_session_options().graph_optimization_level == ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(FileNotFoundError):
        onnx_session(gpunet0_onnx[0].parent / "missing.onnx")


# ---------------------------------------------------------------------------- TorchScript

def test_torchscript_parity_without_deprecation_warnings(gpunet0, tmp_path) -> None:
    path = tmp_path / "gpunet_0.pt"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = export_torchscript(gpunet0, path, img_size=IMG)
    assert not [w for w in caught if issubclass(w.category, (FutureWarning, DeprecationWarning))]
    assert report.format == "torchscript" and report.batch_sizes == (1, 3)
    assert report.max_abs_diff is not None and report.max_abs_diff <= report.tolerance  # type: ignore[operator]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        extra = {"gpunet_metadata.json": ""}
        loaded = torch.jit.load(str(path), _extra_files=extra)
    x = torch.randn(2, 3, IMG, IMG)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), gpunet0(x), rtol=0, atol=1e-4 * float(gpunet0(x).abs().max()))
    meta = json.loads(extra["gpunet_metadata.json"])
    assert json.loads(meta[META_PREPROCESS])["input_size"] == [3, IMG, IMG]


# ---------------------------------------------------------------------------- Triton

_TOKEN = re.compile(r'\s*(?:(#[^\n]*)|("(?:[^"\\]|\\.)*")|([{}\[\]:,])|([A-Za-z0-9_.+-]+))')


def parse_pbtxt(text: str) -> dict[str, list[Any]]:
    """A small protobuf text-format reader: every field maps to the list of its values (repeated or not)."""
    tokens: list[str] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            if text[pos:].strip():
                raise ValueError(f"cannot parse config.pbtxt at {text[pos:pos + 30]!r}")
            break
        pos = m.end()
        if m.group(1) is None and m.group(0).strip():
            tokens.append(m.group(0).strip())

    def scalar(tok: str) -> Any:
        if tok.startswith('"'):
            return json.loads(tok)
        try:
            return int(tok)
        except ValueError:
            return tok  # enum names

    def value(i: int) -> tuple[list[Any], int]:
        if tokens[i] == "{":
            msg, i = message(i + 1, "}")
            return [msg], i + 1
        if tokens[i] == "[":
            out: list[Any] = []
            i += 1
            while tokens[i] != "]":
                v, i = value(i)
                out += v
                if tokens[i] == ",":
                    i += 1
            return out, i + 1
        return [scalar(tokens[i])], i + 1

    def message(i: int, end: str | None) -> tuple[dict[str, list[Any]], int]:
        msg: dict[str, list[Any]] = {}
        while i < len(tokens) and tokens[i] != end:
            key = tokens[i]
            i += 1
            if tokens[i] == ":":
                i += 1
            v, i = value(i)
            msg.setdefault(key, []).extend(v)
        return msg, i

    return message(0, None)[0]


def test_pbtxt_parser_itself() -> None:
    cfg = parse_pbtxt('name: "a" # comment\nx [ { dims: [ 3, 4 ] }, { dims: [ 5 ] } ]\ny { k: KIND_GPU }\nz: 1\nz: 2')
    assert cfg == {"name": ["a"], "x": [{"dims": [3, 4]}, {"dims": [5]}], "y": [{"k": ["KIND_GPU"]}], "z": [1, 2]}


def test_triton_repository_layout_and_config(tmp_path) -> None:
    torch.manual_seed(0)
    model = gpunet.create_model("gpunet_d1", num_classes=10)
    repo = tmp_path / "repo"
    folder, report = export_triton_report(model, repo, max_batch_size=8, tensorrt_accelerator=True, img_size=IMG)
    assert folder == repo / "gpunet_d1"
    mask = os.umask(0o022)
    os.umask(mask)
    for f in ("config.pbtxt", "labels.txt", "1/model.onnx"):  # readable by a server running as another user
        assert (folder / f).stat().st_mode & 0o777 == 0o666 & ~mask
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_file()) == [
        "gpunet_d1/1/model.onnx", "gpunet_d1/config.pbtxt", "gpunet_d1/labels.txt"]
    assert report.max_abs_diff is not None and report.max_abs_diff <= report.tolerance  # type: ignore[operator]

    cfg = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert cfg["name"] == ["gpunet_d1"] and cfg["platform"] == ["onnxruntime_onnx"]
    assert cfg["max_batch_size"] == [8]
    (inp,), (out,) = cfg["input"], cfg["output"]
    assert inp["name"] == [INPUT_NAME] and inp["data_type"] == ["TYPE_FP32"] and inp["dims"] == [3, IMG, IMG]
    assert out["name"] == [OUTPUT_NAME] and out["data_type"] == ["TYPE_FP32"] and out["dims"] == [10]
    assert out["label_filename"] == ["labels.txt"]
    labels = (folder / out["label_filename"][0]).read_text().splitlines()
    assert labels == [f"class_{i}" for i in range(10)]
    (batching,) = cfg["dynamic_batching"]
    assert batching["preferred_batch_size"] and all(1 <= b <= 8 for b in batching["preferred_batch_size"])
    assert batching["max_queue_delay_microseconds"][0] >= 0
    assert cfg["instance_group"][0]["count"] == [1]
    (accel,) = cfg["optimization"][0]["execution_accelerators"][0]["gpu_execution_accelerator"]
    assert accel["name"] == ["tensorrt"]
    params = {p["key"][0]: p["value"][0] for p in accel["parameters"]}
    assert params["precision_mode"] == "FP16"

    # the model file matches the config: names, batch axis for Triton's batcher, per-item dims
    proto = onnx.load(str(folder / "1" / "model.onnx"))
    assert _dims(proto.graph.input[0]) == ["batch", *inp["dims"]]
    assert _dims(proto.graph.output[0]) == ["batch", *out["dims"]]
    session = onnx_session(folder / "1" / "model.onnx", threads=1)
    assert session.run(None, {INPUT_NAME: np.zeros((8, 3, IMG, IMG), np.float32)})[0].shape == (8, 10)


def test_triton_defaults_without_accelerator(gpunet0, tmp_path) -> None:
    folder = export_triton(gpunet0, tmp_path, name="classifier", img_size=IMG, check=False)
    cfg = parse_pbtxt((folder / "config.pbtxt").read_text())
    assert folder.name == "classifier" and cfg["name"] == ["classifier"] and cfg["max_batch_size"] == [32]
    assert "optimization" not in cfg and max(cfg["dynamic_batching"][0]["preferred_batch_size"]) <= 32
    assert len((folder / "labels.txt").read_text().splitlines()) == 1000
    with pytest.raises(ExportError, match="model name"):
        export_triton(gpunet0, tmp_path, name="a/b", img_size=IMG)
    with pytest.raises(ExportError, match="max_batch_size"):
        export_triton(gpunet0, tmp_path, max_batch_size=0, img_size=IMG)


# ---------------------------------------------------------------------------- TensorRT

@pytest.mark.skipif(tensorrt_available(), reason="TensorRT is installed here; the missing-package error can't occur")
def test_tensorrt_without_tensorrt_says_what_to_install(gpunet0, tmp_path) -> None:
    with pytest.raises(ExportError) as info:
        export_tensorrt(gpunet0, tmp_path / "model.plan", img_size=IMG)
    message = str(info.value)
    assert "pip install tensorrt" in message and "NVIDIA GPU" in message and "CUDA" in message
    assert "--format onnx" in message and "triton" in message
    assert not (tmp_path / "model.plan").exists()
    with pytest.raises(ExportError, match="pip install tensorrt"):  # and nothing to run an engine with
        engine_runner(tmp_path / "model.plan", (1, 3, IMG, IMG))


# ---------------------------------------------------------------------------- CLI functions

def _parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="gpunet")
    cli_export.register(parser.add_subparsers())
    return parser.parse_args(["export", *argv])


def test_cli_onnx_export(tmp_path, capsys) -> None:
    out = tmp_path / "m.onnx"
    assert run_export(_parse(["gpunet_0", "--random-weights", "--img-size", str(IMG), "-o", str(out)])) == 0
    captured = capsys.readouterr()
    assert f"wrote {out}" in captured.out and "max abs diff" in captured.out and "opset 18" in captured.out
    assert "MEANINGLESS" in captured.err
    assert _dims(onnx.load(str(out)).graph.input[0]) == ["batch", 3, IMG, IMG]


def test_cli_triton_and_torchscript(tmp_path, capsys) -> None:
    args = _parse(["gpunet_0", "--random-weights", "--img-size", "32", "--format", "triton", "--max-batch-size",
                   "4", "--name", "g0", "--no-check", "-o", str(tmp_path / "repo")])
    assert run_export(args) == 0
    assert "tritonserver --model-repository" in capsys.readouterr().out
    assert parse_pbtxt((tmp_path / "repo" / "g0" / "config.pbtxt").read_text())["max_batch_size"] == [4]
    args = _parse(["gpunet_0", "--random-weights", "--img-size", "32", "--format", "torchscript", "-o",
                   str(tmp_path / "m.pt")])
    assert run_export(args) == 0
    assert "TorchScript vs PyTorch: max abs diff" in capsys.readouterr().out


def test_cli_errors(tmp_path) -> None:
    with pytest.raises(RandomWeightsError):  # no weights and no --random-weights: refused, like predict
        run_export(_parse(["gpunet_0", "-o", str(tmp_path / "m.onnx")]))
    with pytest.raises(ExportError, match="batch"):
        run_export(_parse(["gpunet_0", "--random-weights", "--img-size", "32", "--batch", "x", "-o",
                           str(tmp_path / "m.onnx")]))
    if not tensorrt_available():
        with pytest.raises(ExportError, match="pip install tensorrt"):
            run_export(_parse(["gpunet_0", "--format", "tensorrt", "-o", str(tmp_path / "m.plan")]))
    with pytest.raises(SystemExit):
        _parse(["gpunet_0", "--format", "coreml", "-o", "x"])
    assert not list(tmp_path.iterdir())


# ---------------------------------------------------------------------------- trace_onnx, the one ONNX export

def test_trace_onnx_of_a_single_layer(tmp_path) -> None:
    """The search's per-layer latency model exports blocks that are not classifiers: 4-D in, 4-D out."""
    from gpunet.builder import build_layer
    from gpunet.deploy.onnx import trace_onnx
    from gpunet.deploy.runtime import open_runner

    torch.manual_seed(0)
    arch = gpunet.get_architecture("gpunet_0")
    layer = build_layer(arch, 2).eval()
    x = torch.randn(3, arch.layers[2].in_channels, 16, 16)
    for dynamic in (True, False):
        proto = trace_onnx(layer, tuple(x.shape), dynamic_batch=dynamic)
        assert [i.name for i in proto.graph.input] == [INPUT_NAME] and proto.graph.output[0].name == OUTPUT_NAME
        assert _dims(proto.graph.input[0])[0] == ("batch" if dynamic else 3)
        path = tmp_path / f"layer_{dynamic}.onnx"
        path.write_bytes(proto.SerializeToString())
        runner = open_runner(path, "onnxruntime", threads=1)
        assert runner.fixed_batch == (None if dynamic else 3) and runner.input_dtype == np.float32
        with torch.no_grad():
            expected = layer(x).numpy()
        np.testing.assert_allclose(runner(x.numpy()), expected, rtol=0, atol=1e-4 * np.abs(expected).max())
    assert layer.training is False and next(layer.parameters()).dtype == torch.float32  # the caller's module


def test_trace_onnx_fp16_keeps_float32_io(tmp_path) -> None:
    from gpunet.deploy.onnx import trace_onnx

    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    proto = trace_onnx(conv, (1, 3, 8, 8), fp16=True, exporter="legacy", opset=17)
    assert proto.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert proto.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    assert any(i.data_type == onnx.TensorProto.FLOAT16 for i in proto.graph.initializer)
    assert conv.weight.dtype == torch.float32  # traced on a copy
    with pytest.raises(ExportError, match="exporter must be"):
        trace_onnx(conv, (1, 3, 8, 8), exporter="magic")


# ---------------------------------------------------------------------------- old import paths

def test_old_export_path_still_resolves_with_a_deprecation_warning() -> None:
    import gpunet.export as old

    with pytest.deprecated_call(match=r"gpunet\.export\.export_onnx moved to gpunet\.deploy\.onnx"):
        assert old.export_onnx is export_onnx
    with pytest.deprecated_call():
        assert old.META_LABELS == META_LABELS and old.ExportError is ExportError
    with pytest.deprecated_call():
        assert old.export_triton_report is export_triton_report
    with pytest.raises(AttributeError):
        old.run_export  # noqa: B018  (the command line is gpunet.cli.export now)


def test_cli_constants_agree_with_the_library() -> None:
    """The CLI spells a few defaults out (so `gpunet --help` imports no torch); they must be the library's."""
    from gpunet.deploy.common import MIN_IMG_SIZE
    from gpunet.deploy.onnx import DEFAULT_OPSET

    assert cli_export.DEFAULT_OPSET == DEFAULT_OPSET and cli_export.MIN_IMG_SIZE == MIN_IMG_SIZE


def test_the_deploy_package_needs_no_command_line() -> None:
    """No argparse and no classify/evaluate/cli in gpunet.deploy (the old classify -> runtime -> export cycle)."""
    import ast

    library_above = ("gpunet.classify", "gpunet.evaluate", "gpunet.cli")
    for path in (Path(gpunet.__file__).parent / "deploy").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):  # module- and function-level imports alike
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n == "argparse" or n.startswith(library_above)], (path, names)
