"""Reading every checkpoint form, safe unpickling, clear errors, class-count changes and conversion.

Real files only: NVIDIA's layouts come from the reference's golden/weights.py
(see _checkpoints.py), URLs are served by a loopback HTTP server (_servers.py).
"""

from __future__ import annotations

import argparse
import logging
import os
import zipfile
from collections import OrderedDict
from pathlib import Path
from typing import Any

import pytest
import torch
from _checkpoints import (
    TINY_CLASSES,
    expected_weights,
    golden_file,
    listing_keys,
    tiny_arch,
    tiny_input,
    tiny_model,
    tiny_nvidia,
)
from _servers import closed_port, file_server
from safetensors.torch import save_file

import gpunet
from gpunet import DownloadError, WeightsError, create_model
from gpunet._io import atomic_write
from gpunet.weights import read_checkpoint, save_safetensors_checkpoint, to_nvidia


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNET_HOME", str(tmp_path / "gpunet-home"))
    monkeypatch.delenv("GPUNET_NGC_MIRROR", raising=False)


@pytest.fixture(scope="session")
def golden_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.getbasetemp() / "golden-checkpoints"


@pytest.fixture(scope="session")
def gpunet0_pth(golden_dir: Path) -> Path:
    return golden_file(golden_dir, "gpunet_0", "pth")


@pytest.fixture(scope="session")
def gpunet0_zip(golden_dir: Path) -> Path:
    return golden_file(golden_dir, "gpunet_0", "zip")


def logits(model: torch.nn.Module, x: torch.Tensor | None = None) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(tiny_input() if x is None else x)


def as_nvidia(model: torch.nn.Module) -> OrderedDict[str, torch.Tensor]:
    return to_nvidia(model.state_dict(), model.arch)  # type: ignore[arg-type]


def assert_same_tensors(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert list(got) == list(want)
    for k, v in want.items():
        assert got[k].dtype == v.dtype and torch.equal(got[k], v), k


def timm_layout(ema: dict[str, torch.Tensor] | None, raw: dict[str, torch.Tensor], *,
                ema_key: str = "state_dict_ema", namespace: bool = True) -> dict[str, Any]:
    """timm 0.5.4 CheckpointSaver's dict, in its key order (what NVIDIA's training wrote)."""
    ckpt: dict[str, Any] = {"epoch": 449, "arch": "gpunet", "state_dict": raw,
                            "optimizer": {"state": {}, "param_groups": []}, "version": 2,
                            "args": argparse.Namespace(model="gpunet", amp=True) if namespace else None}
    if ema is not None:
        ckpt[ema_key] = ema
    ckpt["metric"] = 80.0
    return ckpt


def ngc_zip(path: Path, member: str, payload: bytes | Path, *extra: tuple[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        if isinstance(payload, Path):
            zf.write(payload, arcname=member)
        else:
            zf.writestr(member, payload)
        for name, data in extra:
            zf.writestr(name, data)
    return path


def assert_clean_error(excinfo: pytest.ExceptionInfo[Exception], path: str | os.PathLike[str], *words: str) -> str:
    """One of our exception types, the path and `words` in the message, no chained torch traceback."""
    exc = excinfo.value
    assert isinstance(exc, WeightsError | DownloadError), type(exc)
    message = str(exc)
    assert os.fspath(path) in message, message
    for word in words:
        assert word.lower() in message.lower(), (word, message)
    shown_context = exc.__context__ is not None and not exc.__suppress_context__
    assert exc.__cause__ is None and not shown_context, "chained exception: a raw traceback would be shown"
    return message


# ============================================================================ NVIDIA's released files

def test_ngc_zip_as_downloaded_loads_the_ema_weights(gpunet0_zip: Path) -> None:
    with zipfile.ZipFile(gpunet0_zip) as zf:
        assert zf.namelist() == ["0.65ms.pth.tar"]  # NVIDIA's layout: one member, <latency key>.pth.tar
    model = create_model("gpunet_0", weights=gpunet0_zip)
    assert_same_tensors(as_nvidia(model), expected_weights("gpunet_0", seed=1))


def test_timm_checkpoint_prefers_state_dict_ema_like_nvidia(gpunet0_pth: Path) -> None:
    # the realistic file pickles an argparse.Namespace: plain weights_only loading refuses it
    with pytest.raises(Exception, match="(?i)weights.only"):
        torch.load(gpunet0_pth, weights_only=True)
    model = create_model("gpunet_0", weights=gpunet0_pth)
    got = as_nvidia(model)
    assert_same_tensors(got, expected_weights("gpunet_0", seed=1))
    decoy = expected_weights("gpunet_0", seed=2)  # the non-EMA `state_dict` entry
    assert not torch.equal(got["network. layer15.net.6.weight"], decoy["network. layer15.net.6.weight"])


def test_weights_of_another_gpunet_are_named(golden_dir: Path) -> None:
    path = golden_file(golden_dir, "gpunet_1", "pth")
    with pytest.raises(WeightsError) as excinfo:
        create_model("gpunet_0", weights=path)
    message = assert_clean_error(excinfo, path, "does not fit gpunet_0")
    assert "looks like a checkpoint of gpunet_1" in message


# ============================================================================ accepted forms (tiny model)

@pytest.mark.parametrize("member", ["0.65ms.pth.tar", "model.pth", "gpunet_ckpt/weights.pt"])
def test_ngc_zip_takes_its_single_checkpoint_member_whatever_its_name(tmp_path: Path, member: str) -> None:
    inner = tmp_path / "inner.pth.tar"
    torch.save(timm_layout(tiny_nvidia(1), tiny_nvidia(2)), inner)
    path = ngc_zip(tmp_path / "ngc.zip", member, inner, ("README.txt", b"NGC model card"))
    model = create_model(tiny_arch(), weights=path)
    assert torch.equal(logits(model), logits(tiny_model(1)))


def test_model_ema_is_preferred_over_state_dict(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth.tar"
    torch.save(timm_layout(tiny_nvidia(1), tiny_nvidia(2), ema_key="model_ema"), path)
    assert torch.equal(logits(create_model(tiny_arch(), weights=path)), logits(tiny_model(1)))


def test_state_dict_is_used_without_ema(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth.tar"
    torch.save(timm_layout(None, tiny_nvidia(2), namespace=False), path)
    assert torch.equal(logits(create_model(tiny_arch(), weights=path)), logits(tiny_model(2)))


def test_model_key_and_module_prefix_are_stripped(tmp_path: Path) -> None:
    wrapped = OrderedDict(("module." + k, v) for k, v in tiny_nvidia(3).items())  # DataParallel/DDP names
    path = tmp_path / "ddp.pth"
    torch.save({"model": wrapped}, path)
    assert torch.equal(logits(create_model(tiny_arch(), weights=path)), logits(tiny_model(3)))
    bare = tmp_path / "bare.pth"
    torch.save(wrapped, bare)
    assert torch.equal(logits(create_model(tiny_arch(), weights=bare)), logits(tiny_model(3)))


def test_bare_nvidia_state_dict_p0_p1_layout(tmp_path: Path) -> None:
    path = tmp_path / "0.5ms-D.pth.tar"
    torch.save(tiny_nvidia(4), path)  # NVIDIA's P0/P1: torch.save(model.state_dict())
    assert torch.equal(logits(create_model(tiny_arch(), weights=path)), logits(tiny_model(4)))


def test_our_own_state_dict_naming_loads(tmp_path: Path) -> None:
    path = tmp_path / "ours.pth"
    torch.save(tiny_model(5).state_dict(), path)
    assert torch.equal(logits(create_model(tiny_arch(), weights=path)), logits(tiny_model(5)))


def test_safetensors_carries_the_architecture(tmp_path: Path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_safetensors_checkpoint(tiny_model(6), path)
    model = create_model(path)  # the architecture comes from the file's metadata
    assert model.arch == tiny_arch() and model.num_classes == TINY_CLASSES
    assert torch.equal(logits(model), logits(tiny_model(6)))
    assert torch.equal(logits(create_model(tiny_arch(), weights=str(path))), logits(tiny_model(6)))
    assert sorted(os.listdir(tmp_path)) == ["tiny.safetensors"]  # written atomically: no temp file left


def test_foreign_safetensors_needs_a_model_name(tmp_path: Path) -> None:
    path = tmp_path / "foreign.safetensors"
    save_file({k: v.contiguous() for k, v in tiny_model(7).state_dict().items()}, str(path))
    with pytest.raises(WeightsError, match="not written by gpunet"):
        create_model(path)
    assert torch.equal(logits(create_model(tiny_arch(), weights=path)), logits(tiny_model(7)))


def test_http_and_file_urls_are_downloaded_once(tmp_path: Path) -> None:
    inner = tmp_path / "inner.pth.tar"
    torch.save(timm_layout(tiny_nvidia(8), tiny_nvidia(2)), inner)
    zpath = ngc_zip(tmp_path / "tiny.zip", "x.pth.tar", inner)
    want = logits(tiny_model(8))
    with file_server({"w/tiny.zip": zpath.read_bytes(), "w/tiny.pth.tar": inner.read_bytes()}) as server:
        for name in ("w/tiny.zip", "w/tiny.pth.tar"):
            for _ in range(2):
                assert torch.equal(logits(create_model(tiny_arch(), weights=server.url(name), progress=False)), want)
            assert len(server.requests_for(name)) == 1  # the second load used the cache
    assert torch.equal(logits(create_model(tiny_arch(), weights=zpath.as_uri(), progress=False)), want)
    cache = tmp_path / "gpunet-home" / "checkpoints"
    names = sorted(os.listdir(cache))
    assert len([n for n in names if n.endswith(".sha256")]) == 3 and not any(n.endswith(".partial") for n in names)


# ============================================================================ safe loading

def test_pickled_namespace_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth.tar"
    torch.save(timm_layout(tiny_nvidia(1), tiny_nvidia(2), namespace=True), path)
    assert torch.equal(logits(create_model(tiny_arch(), weights=path)), logits(tiny_model(1)))


class _RunsShell:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return os.system, (f"touch '{self.marker}'",)


class _WritesFile:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return open, (str(self.marker), "w")


PAYLOADS = {"os.system": _RunsShell, "open": _WritesFile}


@pytest.mark.parametrize("container", ["pth", "legacy-pth", "ngc-zip"])
@pytest.mark.parametrize("payload", list(PAYLOADS))
def test_checkpoint_that_would_run_code_is_refused(tmp_path: Path, container: str, payload: str) -> None:
    marker = tmp_path / "pwned"
    ckpt = timm_layout(tiny_nvidia(1), tiny_nvidia(2))
    ckpt["args"] = PAYLOADS[payload](marker)
    path = tmp_path / "evil.pth.tar"
    torch.save(ckpt, path, _use_new_zipfile_serialization=container != "legacy-pth")
    if container == "ngc-zip":
        path = ngc_zip(tmp_path / "evil.zip", "0.65ms.pth.tar", path)
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=path)
    assert_clean_error(excinfo, path, "refused", "arbitrary code")
    assert not marker.exists(), "the checkpoint ran code"


def test_malicious_payload_is_live(tmp_path: Path) -> None:
    """Control for the test above: unsafe loading really runs the payload."""
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"x": _WritesFile(marker)}, path)
    torch.load(path, weights_only=False)
    assert marker.exists()


# ============================================================================ class count

def test_other_num_classes_keeps_backbone_and_reinitialises_classifier(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "ckpt.pth.tar"
    torch.save(timm_layout(tiny_nvidia(1), tiny_nvidia(2)), path)
    source = tiny_model(1).state_dict()
    with caplog.at_level(logging.WARNING, logger="gpunet"):
        model = create_model(tiny_arch(), weights=path, num_classes=3)
    got = model.state_dict()
    backbone = [k for k in source if not k.startswith("classifier.")]
    assert backbone and all(torch.equal(got[k], source[k]) for k in backbone)
    assert got["classifier.weight"].shape == (3, 32) and got["classifier.bias"].shape == (3,)
    assert logits(model).shape == (2, 3)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("10 classes" in r.getMessage() and "newly initialised" in r.getMessage() for r in warnings)


def test_features_only_backbone_loads_a_classifier_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.pth.tar"
    torch.save(tiny_nvidia(1), path)
    model = create_model(tiny_arch(), weights=path, features_only=True)
    got, source = model.state_dict(), tiny_model(1).state_dict()
    assert got and all(torch.equal(v, source[k]) for k, v in got.items())


# ============================================================================ errors

def test_missing_tensors_are_listed_with_shapes(tmp_path: Path) -> None:
    sd = tiny_nvidia(1)
    dropped = [k for k in sd if k.endswith(".weight")][:7]
    for k in dropped:
        del sd[k]
    path = tmp_path / "ckpt.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=path)
    message = assert_clean_error(excinfo, path, "7 missing", "(2 more)")
    assert "stem.0.conv.weight (8, 3, 3, 3)" in message


def test_unexpected_and_misshaped_tensors_are_listed(tmp_path: Path) -> None:
    sd = tiny_nvidia(1)
    sd["network.stage: 9 layer99.conv.weight"] = torch.zeros(4, 4, 1, 1)
    sd["network.stage: 1 layer3.conv.weight"] = torch.zeros(8, 8, 5, 5)
    path = tmp_path / "ckpt.pth"
    torch.save(sd, path)
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=path)
    message = assert_clean_error(excinfo, path, "1 unexpected", "1 with another shape")
    assert "network.stage: 9 layer99.conv.weight" in message
    assert "stages.0.0.conv.weight checkpoint (8, 8, 5, 5) vs model (8, 8, 3, 3)" in message


def test_checkpoint_without_weights(tmp_path: Path) -> None:
    path = tmp_path / "meta.pth.tar"
    torch.save({"epoch": 3, "arch": "gpunet"}, path)
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=path)
    assert_clean_error(excinfo, path, "no state dict found", "state_dict_ema")


def _tiny_files(tmp_path: Path) -> tuple[Path, Path]:
    pth = tmp_path / "ckpt.pth.tar"
    torch.save(timm_layout(tiny_nvidia(1), tiny_nvidia(2)), pth)
    return pth, ngc_zip(tmp_path / "ngc.zip", "0.65ms.pth.tar", pth)


def _corrupt_deflate_stream(path: Path) -> None:
    """Overwrite the start of the first member's compressed data (not just its CRC)."""
    data = bytearray(path.read_bytes())
    start = 30 + int.from_bytes(data[26:28], "little") + int.from_bytes(data[28:30], "little")
    data[start:start + 64] = b"\xff" * 64
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", ["truncated-pth", "truncated-zip", "corrupt-zip-stream", "flipped-zip-bytes",
                                    "truncated-safetensors", "zip-of-truncated-safetensors"])
def test_truncated_or_corrupt_files(tmp_path: Path, damage: str) -> None:
    pth, zpath = _tiny_files(tmp_path)
    if damage == "truncated-pth":
        path = pth
        path.write_bytes(pth.read_bytes()[: pth.stat().st_size // 2])
    elif damage == "truncated-zip":
        path = zpath
        path.write_bytes(zpath.read_bytes()[: zpath.stat().st_size // 2])
    elif damage == "corrupt-zip-stream":
        path = zpath
        _corrupt_deflate_stream(path)
    elif damage == "flipped-zip-bytes":
        path = zpath
        data = bytearray(path.read_bytes())
        middle = len(data) // 2
        data[middle:middle + 100] = bytes(b ^ 0x5A for b in data[middle:middle + 100])
        path.write_bytes(bytes(data))
    else:
        path = tmp_path / "tiny.safetensors"
        save_safetensors_checkpoint(tiny_model(1), path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        if damage == "zip-of-truncated-safetensors":
            path = ngc_zip(tmp_path / "st.zip", "tiny.safetensors", path.read_bytes())
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=path)
    message = assert_clean_error(excinfo, path)
    assert "corrupt" in message or "truncated" in message


def _png() -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buf, "PNG")
    return buf.getvalue()


@pytest.mark.parametrize(("content", "expected"), [
    (b"", "empty file"),
    (os.urandom(4096), "not a PyTorch checkpoint"),
    # files that are something else are named for what they are (these used to show torch's unpickler message)
    (b"hello world, not a checkpoint\n" * 40, "not a checkpoint: it is a text file"),
    (b"<html><body>404 Not Found</body></html>", "not a checkpoint: it is an HTML or XML file"),
    (_png(), "not a checkpoint: it is a PNG image"),
    (b"\xff\xd8\xff\xe0" + os.urandom(500), "not a checkpoint: it is a JPEG image"),
    (b'{"entries": []}', "not a checkpoint: it is a JSON file"),
], ids=["empty", "random", "text", "html", "png", "jpeg", "json"])
def test_garbage_is_reported_as_not_a_checkpoint(tmp_path: Path, content: bytes, expected: str) -> None:
    path = tmp_path / "weights.pth"
    path.write_bytes(content)
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=path)
    message = assert_clean_error(excinfo, path, expected)
    assert "refused" not in message  # corrupt data is not reported as a security refusal


def test_many_random_files_never_leak_raw_errors(tmp_path: Path) -> None:
    path = tmp_path / "weights.pth"
    g = torch.Generator().manual_seed(0)
    for size in (1, 7, 64, 300, 1000) * 6:
        path.write_bytes(torch.randint(0, 256, (size,), generator=g, dtype=torch.uint8).numpy().tobytes())
        with pytest.raises(WeightsError):
            read_checkpoint(path)


@pytest.mark.parametrize(("members", "found"), [([("README.txt", b"model card")], 0),
                                               ([("a.pth.tar", b"x"), ("b.pth", b"y")], 2)], ids=["none", "two"])
def test_zip_needs_exactly_one_checkpoint_member(tmp_path: Path, members: list[tuple[str, bytes]],
                                                 found: int) -> None:
    path = tmp_path / "ngc.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=path)
    message = assert_clean_error(excinfo, path, f"found {found}")
    assert all(name in message for name, _ in members)


def test_directory_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=tmp_path)
    assert_clean_error(excinfo, tmp_path, "directory")
    missing = tmp_path / "nope.pth.tar"
    with pytest.raises(WeightsError) as excinfo:
        create_model(tiny_arch(), weights=missing)
    assert_clean_error(excinfo, missing, "not found")


def test_unreachable_url_says_how_to_work_offline() -> None:
    url = f"http://127.0.0.1:{closed_port()}/x.pth"
    with pytest.raises(DownloadError) as excinfo:
        create_model(tiny_arch(), weights=url, progress=False)
    assert_clean_error(excinfo, url, "local file", "GPUNET_NGC_MIRROR")


def test_missing_url_reports_http_status(tmp_path: Path) -> None:
    with file_server({}) as server:
        url = server.url("gone.pth")
        with pytest.raises(DownloadError) as excinfo:
            create_model(tiny_arch(), weights=url, progress=False)
    assert_clean_error(excinfo, url, "HTTP 404", "local file")
    assert not (tmp_path / "gpunet-home" / "checkpoints").exists() or not any(
        n.endswith("gone.pth") for n in os.listdir(tmp_path / "gpunet-home" / "checkpoints"))


# ============================================================================ conversion

def _no_temp_files(folder: Path, expected: set[str]) -> None:
    assert set(os.listdir(folder)) == expected


def test_convert_round_trip_timm_layout(gpunet0_zip: Path, tmp_path: Path) -> None:
    st, back = tmp_path / "gpunet_0.safetensors", tmp_path / "0.65ms.pth.tar"
    assert gpunet.convert(gpunet0_zip, st) == "gpunet-safetensors"
    assert gpunet.convert(st, back) == "nvidia-timm"
    _no_temp_files(tmp_path, {st.name, back.name})
    ckpt = torch.load(back, weights_only=True)  # what NVIDIA's own code (torch >= 2.6) does
    want = expected_weights("gpunet_0", seed=1)
    for key in ("state_dict_ema", "state_dict"):
        sd = ckpt[key]
        assert [(k, tuple(v.shape)) for k, v in sd.items()] == listing_keys("gpunet_0")
        assert_same_tensors(sd, want)
    # our .safetensors alone rebuilds the model with the same outputs
    x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    assert torch.equal(logits(create_model(st), x), logits(create_model("gpunet_0", weights=gpunet0_zip), x))


def test_convert_round_trip_bare_state_dict_p0(golden_dir: Path, tmp_path: Path) -> None:
    src = golden_file(golden_dir, "gpunet_p0", "pth")
    st, back = tmp_path / "p0.safetensors", tmp_path / "0.5ms-D.pth.tar"
    assert gpunet.convert(src, st) == "gpunet-safetensors"
    assert gpunet.convert(st, back) == "nvidia-raw_state_dict"
    _no_temp_files(tmp_path, {st.name, back.name})
    sd = torch.load(back, weights_only=True)  # NVIDIA: model.load_state_dict(torch.load(path))
    assert isinstance(sd, OrderedDict) and all(isinstance(v, torch.Tensor) for v in sd.values())
    assert [(k, tuple(v.shape)) for k, v in sd.items()] == listing_keys("gpunet_p0")
    assert_same_tensors(sd, expected_weights("gpunet_p0", seed=1))


def test_convert_custom_architecture_needs_its_json(tmp_path: Path) -> None:
    src = tmp_path / "ckpt.pth.tar"
    torch.save(timm_layout(tiny_nvidia(1), tiny_nvidia(2)), src)
    with pytest.raises(WeightsError, match="not a checkpoint of a released GPUNet"):
        gpunet.convert(src, tmp_path / "x.safetensors")
    arch_json = tmp_path / "tiny.json"
    tiny_arch().save(arch_json)
    out = tmp_path / "out.pth.tar"
    assert gpunet.convert(src, out, arch_json, layout="raw_state_dict") == "nvidia-raw_state_dict"
    assert_same_tensors(torch.load(out, weights_only=True), tiny_nvidia(1))


def test_failed_write_leaves_nothing(tmp_path: Path) -> None:
    target = tmp_path / "out.pth.tar"

    def fail(tmp: str) -> None:
        Path(tmp).write_bytes(b"half a checkpoint")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, fail)
    assert os.listdir(tmp_path) == []
