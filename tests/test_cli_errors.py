"""Hard to break (issue #13, commands): bad values, unfit files, outputs that cannot be written, full disks.

Each case is one `gpunet: error: ...` line naming the option or file and what was expected, given
before any work starts where the problem is knowable then; no traceback; an earlier file is never
replaced by a half-written one and never by the command's own input.

Faults are real: a read-only bind mount in a private mount namespace (`unshare -rm`, skipped where
the machine has none) and a file-size limit (RLIMIT_FSIZE: writes past it fail with EFBIG, as on
a full disk) in a real `gpunet` subprocess.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from _helpers import ROOT, write_tiny_arch
from _train_helpers import TINY_A, make_dataset, write_arch
from PIL import Image

import gpunet
from gpunet import cli
from gpunet.deploy import export_onnx
from gpunet.deploy.torchscript import export_torchscript
from gpunet.train import train

pytestmark = pytest.mark.usefixtures("single_thread_torch")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    """A tiny architecture, an image, a trained run, and exported ONNX / TorchScript files of the model."""
    d = tmp_path_factory.mktemp("cli_errors")
    arch = write_tiny_arch(d / "tiny.json")
    Image.new("RGB", (40, 30), "orange").save(d / "a.png")
    make_dataset(d / "data", classes=2, train_per_class=4, val_per_class=2)
    run = train(d / "data", model=str(write_arch(d / "tiny_a.json", TINY_A)), img_size=32, batch_size=4, epochs=1,
                workers=0, device="cpu", log_interval=1000, output=str(d / "runs"), experiment="r")
    torch.manual_seed(0)
    model = gpunet.create_model(arch)
    export_onnx(model, d / "m.onnx", check=False)
    export_torchscript(model, d / "m.pt", check=False)
    (d / "truncated.onnx").write_bytes((d / "m.onnx").read_bytes()[:3000])
    return {"dir": d, "arch": arch, "image": d / "a.png", "data": d / "data", "run": Path(run.output_dir),
            "onnx": d / "m.onnx", "pt": d / "m.pt", "truncated": d / "truncated.onnx"}


def one_error(capsys: pytest.CaptureFixture[str], argv: list[str]) -> str:
    """Run `gpunet ARGV` in this process: exit 2, nothing on stdout, one error line on stderr (returned)."""
    code = cli.main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if not line.startswith("gpunet: WARNING")]
    assert code == 2 and captured.out == "", (code, captured.out)
    assert len(lines) == 1 and lines[0].startswith("gpunet: error: "), captured.err
    return lines[0][len("gpunet: error: "):]


# ---------------------------------------------------------------------------- option values

BAD_VALUES = [
    (["--top-k", "-1"], "--top-k -1: expected an integer >= 1"),
    (["--top-k", "0"], "--top-k 0: expected an integer >= 1"),
    (["--batch-size", "0"], "--batch-size 0: expected an integer >= 1"),
    (["--batch-size", "-5"], "--batch-size -5: expected an integer >= 1"),
    (["--img-size", "0"], "--img-size 0 is below the minimum of 32 px"),
    (["--img-size", "100000"], "--img-size 100000 is over the limit"),
    (["--crop-pct", "0"], "--crop-pct 0.0: expected a number in (0, 1]"),
    (["--crop-pct", "1.5"], "--crop-pct 1.5: expected a number in (0, 1]"),
    (["--workers", "-1"], "--workers -1: expected an integer >= 0"),
    (["--device", "tpu"], "device 'tpu': expected auto"),
]


@pytest.mark.parametrize(("extra", "message"), BAD_VALUES, ids=[" ".join(e) for e, _ in BAD_VALUES])
def test_predict_option_values(files, capsys, extra: list[str], message: str) -> None:
    base = ["predict", files["image"], "--model", files["arch"], "--random-weights"]
    assert one_error(capsys, [*base, *extra]).startswith(message)


@pytest.mark.parametrize(("extra", "message"), [
    (["--limit", "0"], "--limit 0: expected an integer >= 1"),
    (["--limit", "-3"], "--limit -3: expected an integer >= 1"),
    (["--batch-size", "0"], "--batch-size 0: expected an integer >= 1"),
    (["--img-size", "16"], "--img-size 16 is below the minimum of 32 px"),
])
def test_validate_option_values(files, capsys, extra: list[str], message: str) -> None:
    base = ["validate", files["data"] / "val", "--model", files["arch"], "--random-weights", "--workers", "0"]
    assert one_error(capsys, [*base, *extra]).startswith(message)


def test_other_commands_check_their_values(files, capsys, tmp_path) -> None:
    assert one_error(capsys, ["info", files["arch"], "--img-size", "100000"]).startswith("--img-size 100000 is over")
    assert one_error(capsys, ["export", files["arch"], "--random-weights", "--img-size", "100000", "-o",
                              tmp_path / "x.onnx"]).startswith("--img-size 100000 is over")
    assert one_error(capsys, ["quantize", files["onnx"], "--calibration", files["data"] / "val", "--num-images", "0",
                              "-o", tmp_path / "q.onnx"]).startswith("--num-images 0: expected an integer >= 1")
    assert one_error(capsys, ["quantize", files["onnx"], "--calibration", files["data"] / "val", "--val",
                              files["data"] / "val", "--limit", "0", "-o", tmp_path / "q.onnx"]).startswith(
        "--limit 0: expected an integer >= 1")
    assert not list(tmp_path.iterdir())


def test_library_arguments_are_checked_too(files) -> None:
    clf = gpunet.Classifier(files["arch"], random_weights=True, device="cpu")
    with pytest.raises(gpunet.errors.SettingError, match="top_k -1: expected an integer >= 1"):
        clf.predict(files["image"], top_k=-1)
    with pytest.raises(gpunet.errors.SettingError, match="batch_size 0"):
        gpunet.Classifier(files["arch"], random_weights=True, batch_size=0)
    with pytest.raises(gpunet.errors.SettingError, match="crop_pct 0"):
        gpunet.validate(files["arch"], files["data"] / "val", random_weights=True, crop_pct=0.0)
    with pytest.raises(gpunet.errors.SettingError, match="limit 0"):
        gpunet.validate(files["arch"], files["data"] / "val", random_weights=True, limit=0, workers=0)


# ---------------------------------------------------------------------------- files that are not what is expected

def test_a_folder_as_labels(files, capsys) -> None:
    message = one_error(capsys, ["predict", files["image"], "--model", files["arch"], "--random-weights", "--labels",
                                 files["dir"]])
    assert message == f"{files['dir']}: is a folder; expected a text file with one class name per line"


def test_model_files_say_what_they_are(files, capsys) -> None:
    pt, onnx_file = files["pt"], files["onnx"]
    assert one_error(capsys, ["predict", files["image"], "--model", pt]).startswith(
        f"{pt} is a TorchScript module; expected a zoo name")
    assert one_error(capsys, ["info", pt]).startswith(f"{pt} is a TorchScript module; `gpunet info` describes")
    assert one_error(capsys, ["info", onnx_file]).startswith(f"{onnx_file} is an exported ONNX model; `gpunet info`")
    ckpt = files["run"] / "last.pth.tar"
    message = one_error(capsys, ["validate", files["data"] / "val", "--model", ckpt])
    assert message.startswith(f"{ckpt} is a PyTorch checkpoint; expected") and "--weights" in message
    truncated = files["truncated"]
    for command in (["predict", files["image"]], ["validate", files["data"] / "val"]):
        message = one_error(capsys, [*command, "--model", truncated])
        assert message.startswith(f"{truncated}: not a readable ONNX model (truncated or corrupt")


# ---------------------------------------------------------------------------- outputs

def test_outputs_are_checked_before_the_work(files, capsys, tmp_path) -> None:
    folder = tmp_path / "a_folder"
    folder.mkdir()
    assert one_error(capsys, ["export", files["arch"], "--random-weights", "-o", folder]) == (
        f"-o {folder}: is a folder; expected a file path")
    ckpt = files["run"] / "last.pth.tar"
    assert one_error(capsys, ["convert", ckpt, folder]) == f"DST {folder}: is a folder; expected a file path"
    before = ckpt.read_bytes()
    assert "is this command's input" in one_error(capsys, ["convert", ckpt, ckpt])
    assert ckpt.read_bytes() == before
    with pytest.raises(gpunet.errors.SettingError, match="is the checkpoint being converted"):
        gpunet.conversion.convert(ckpt, ckpt)
    assert not list(folder.iterdir())


def test_quantize_never_replaces_its_input(files, capsys, tmp_path) -> None:
    model = tmp_path / "model.onnx"
    shutil.copy(files["onnx"], model)
    before = model.read_bytes()
    calib = ["--calibration", files["data"] / "val"]
    for out in (model, tmp_path / "." / "model.onnx"):
        assert "is this command's input" in one_error(capsys, ["quantize", model, *calib, "-o", out])
    message = one_error(capsys, ["quantize", "tiny", "--random-weights", *calib, "--fp32-output", tmp_path / "x.onnx",
                                 "-o", tmp_path / "x.onnx"])
    assert message == f"--fp32-output {tmp_path / 'x.onnx'} is also -o: the float32 and INT8 models need two files"
    with pytest.raises(gpunet.errors.QuantizeError, match="is the float32 model being quantized"):
        from gpunet.deploy.quantize import quantize_onnx

        quantize_onnx(model, model, files["data"] / "val")
    assert model.read_bytes() == before


# ---------------------------------------------------------------------------- read-only folders, full disk

# Runs `gpunet` commands one after the other in one fresh process (one start-up for several commands), each
# under its own file-size limit (RLIMIT_FSIZE: a write past it fails with EFBIG, as on a full disk; Python
# ignores SIGXFSZ), and marks where each one's output ends and with which exit status.
RUNNER = textwrap.dedent("""
    import json, resource, sys
    from gpunet.cli import main
    UNLIMITED = (resource.RLIM_INFINITY, resource.RLIM_INFINITY)
    for limit, argv in json.loads(sys.argv[1]):
        if limit:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))
        code = main(argv)
        resource.setrlimit(resource.RLIMIT_FSIZE, UNLIMITED)
        print(f"### exit {code}", file=sys.stderr, flush=True)
""")


def run_commands(commands: list[tuple[int, list[object]]], mounts: str | None = None) -> list[tuple[int, str]]:
    """(exit status, stderr) of each `gpunet` command (file-size limit, argv), in a real subprocess; with
    `mounts`, inside a private user+mount namespace after that shell set-up."""
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    env.pop("GPUNET_NGC_MIRROR", None)
    python = [sys.executable, "-c", RUNNER, json.dumps([(limit, [str(a) for a in argv]) for limit, argv in commands])]
    cmd = python if mounts is None else ["unshare", "-rm", "sh", "-c", f'set -e; {mounts}; exec "$@"', "sh", *python]
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)
    parts = result.stderr.split("### exit ")
    assert result.returncode == 0 and len(parts) == len(commands) + 1, result.stderr
    return [(int(parts[i + 1].split("\n", 1)[0]), parts[i].split("\n", 1)[-1] if i else parts[i])
            for i in range(len(commands))]


def assert_one_error(code: int, stderr: str, *needles: str) -> None:
    errors = [line for line in stderr.splitlines() if line.startswith("gpunet") and "error:" in line]
    assert code == 2 and "Traceback" not in stderr, stderr
    assert len(errors) == 1 and errors[0].startswith("gpunet: error: "), stderr
    assert any(n in errors[0] for n in needles), errors[0]


def _namespace_available() -> bool:
    return shutil.which("unshare") is not None and subprocess.run(["unshare", "-rm", "true"],
                                                                  capture_output=True).returncode == 0


@pytest.mark.skipif(not _namespace_available(), reason="no unprivileged mount namespace (unshare -rm)")
def test_read_only_output_folders(files, tmp_path) -> None:
    """train --output, export -o, convert DST and validate --results-file into a read-only folder (a read-only
    bind mount): one line each, exit 2, nothing written, the folder's old file intact."""
    ro = tmp_path / "ro"
    ro.mkdir()
    (ro / "results.csv").write_text("model,top1\nold,1.0\n")
    commands: list[tuple[int, list[object]]] = [
        (0, ["train", files["data"], "--model", files["dir"] / "tiny_a.json", "--img-size", "32", "-b", "4",
             "--epochs", "1", "--workers", "0", "--device", "cpu", "--output", ro, "--experiment", "x"]),
        (0, ["export", files["arch"], "--random-weights", "-o", ro / "m.onnx"]),
        (0, ["convert", files["run"] / "last.pth.tar", ro / "m.safetensors"]),
        (0, ["validate", files["data"] / "val", "--model", files["arch"], "--random-weights", "--workers", "0",
             "--results-file", ro / "results.csv"]),
    ]
    for code, stderr in run_commands(commands, mounts=f"mount --bind {ro} {ro} && mount -o remount,bind,ro {ro}"):
        assert_one_error(code, stderr, "Read-only file system", "read-only or no permission")
    assert sorted(os.listdir(ro)) == ["results.csv"] and (ro / "results.csv").read_text() == "model,top1\nold,1.0\n"


def test_a_full_disk_keeps_the_old_files(files, tmp_path) -> None:
    """export over an old .onnx, convert over an old checkpoint, validate appending to a large results file,
    and a resumed training run writing its next checkpoint: one line each, every old file byte for byte."""
    old = {tmp_path / "m.onnx": b"old onnx", tmp_path / "m.pth.tar": b"old checkpoint",
           tmp_path / "results.csv": b"model,top1\n" + b"x" * 60_000 + b",1\n"}
    for path, data in old.items():
        path.write_bytes(data)
    run = tmp_path / "run"
    shutil.copytree(files["run"], run)
    checkpoints = {p.name: p.read_bytes() for p in run.glob("*.pth.tar")}
    commands: list[tuple[int, list[object]]] = [
        (70_000, ["export", files["arch"], "--random-weights", "-o", tmp_path / "m.onnx"]),
        (5_000, ["convert", files["run"] / "last.pth.tar", tmp_path / "m.pth.tar"]),
        (60_050, ["validate", files["data"] / "val", "--model", files["arch"], "--random-weights", "--workers", "0",
                  "--results-file", tmp_path / "results.csv"]),
        (5_000, ["train", "--resume", run / "last.pth.tar", "--epochs", "2"]),  # used to print two tracebacks
    ]
    names = ["m.onnx", "m.pth.tar", "results.csv", "run/last.pth.tar"]
    for (code, stderr), name in zip(run_commands(commands), names, strict=True):
        assert_one_error(code, stderr, f"File too large: '{tmp_path / name}' (disk full",
                         f"{tmp_path / name}: writing failed")
    assert {p: p.read_bytes() for p in old} == old
    assert {p.name: p.read_bytes() for p in run.glob("*.pth.tar")} == checkpoints
    assert not list(tmp_path.rglob(".*.tmp"))  # no temporary file left behind
