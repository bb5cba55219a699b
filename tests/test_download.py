"""pretrained=True through a mirror, the download cache, resumable and verified downloads.

Every server here is real: http.server on 127.0.0.1 in a thread (tests/_servers.py).
The NGC zip is written in NVIDIA's exact layout by the reference's golden/weights.py.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest
import torch
from _checkpoints import expected_weights, file_sha256, golden_file
from _servers import RawServer, closed_port, file_server

from gpunet import DownloadError, create_model, get_pretrained_config, hub
from gpunet.weights import to_nvidia

# gpunet_0: the smallest download; test_weights.py uses the same generated zip (written once per session)
MODEL = "gpunet_0"
CFG = get_pretrained_config(MODEL)


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "gpunet-home"
    monkeypatch.setenv("GPUNET_HOME", str(path))
    monkeypatch.delenv("GPUNET_NGC_MIRROR", raising=False)
    return path


@pytest.fixture(scope="session")
def ngc_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NGC download: <latency key>.pth.tar (timm layout, Namespace, EMA + decoy) in a zip."""
    return golden_file(tmp_path_factory.getbasetemp() / "golden-checkpoints", MODEL, "zip")


@pytest.fixture(scope="session")
def disk_logits(ngc_zip: Path) -> torch.Tensor:
    """What loading the same zip from disk gives."""
    return logits(create_model(MODEL, weights=ngc_zip))


def logits(model: torch.nn.Module) -> torch.Tensor:
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return model.eval()(x)


def pretrained() -> torch.nn.Module:
    return create_model(MODEL, pretrained=True, progress=False)


def assert_cached(home: Path, name: str, source: Path | bytes) -> Path:
    """The finished file, its sha256 sidecar, and nothing else (no .partial, no temp files)."""
    folder = home / "checkpoints"
    path = folder / name
    want = file_sha256(source) if isinstance(source, Path) else hashlib.sha256(source).hexdigest()
    assert file_sha256(path) == want
    assert (folder / f"{name}.sha256").read_text().strip() == want
    assert sorted(os.listdir(folder)) == [name, f"{name}.sha256"]
    return path


# ============================================================================ pretrained=True via a mirror

def test_pretrained_from_mirror_server_downloads_once(ngc_zip: Path, disk_logits: torch.Tensor, home: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    with file_server({f"ngc/{CFG.filename}": ngc_zip.read_bytes()}) as server:
        monkeypatch.setenv("GPUNET_NGC_MIRROR", server.url("ngc/"))
        model = pretrained()
        assert len(server.requests) == 1 and server.requests[0].path == f"/ngc/{CFG.filename}"
        assert_cached(home, CFG.filename, ngc_zip)
        again = pretrained()
        assert len(server.requests) == 1  # served from the cache, checked against the sidecar
    assert torch.equal(logits(model), disk_logits)
    assert torch.equal(logits(again), disk_logits)
    got = to_nvidia(model.state_dict(), model.arch)  # type: ignore[arg-type]
    want = expected_weights(MODEL, seed=1)  # the EMA weights, not the decoy
    assert list(got) == list(want) and all(torch.equal(got[k], v) for k, v in want.items())


def test_corrupted_cache_is_downloaded_again(ngc_zip: Path, disk_logits: torch.Tensor, home: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    with file_server({CFG.filename: ngc_zip.read_bytes()}) as server:
        monkeypatch.setenv("GPUNET_NGC_MIRROR", server.base_url)
        pretrained()
        cached = home / "checkpoints" / CFG.filename
        data = bytearray(cached.read_bytes())
        data[len(data) // 3] ^= 0xFF  # one flipped byte: the sidecar no longer matches
        cached.write_bytes(bytes(data))
        model = pretrained()
        assert len(server.requests) == 2
    assert_cached(home, CFG.filename, ngc_zip)
    assert torch.equal(logits(model), disk_logits)


@pytest.mark.parametrize("form", ["folder", "file-url"])
def test_pretrained_from_mirror_folder(ngc_zip: Path, disk_logits: torch.Tensor, home: Path, tmp_path: Path,
                                       monkeypatch: pytest.MonkeyPatch, form: str) -> None:
    mirror = tmp_path / "ngc mirror #1 %41"  # characters that mean something in a URL
    mirror.mkdir()
    shutil.copyfile(ngc_zip, mirror / CFG.filename)
    monkeypatch.setenv("GPUNET_NGC_MIRROR", str(mirror) if form == "folder" else mirror.as_uri())
    assert torch.equal(logits(pretrained()), disk_logits)
    assert_cached(home, CFG.filename, ngc_zip)


def test_pretrained_unreachable_mirror_explains_the_alternatives(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPUNET_NGC_MIRROR", f"http://127.0.0.1:{closed_port()}")
    with pytest.raises(DownloadError) as excinfo:
        pretrained()
    message = str(excinfo.value)
    for part in (CFG.filename, "GPUNET_NGC_MIRROR", "local file", "weights=PATH"):
        assert part in message, (part, message)


def test_pretrained_mirror_without_the_file(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with file_server({}) as server:
        monkeypatch.setenv("GPUNET_NGC_MIRROR", server.base_url)
        with pytest.raises(DownloadError, match=f"HTTP 404.*{CFG.filename}"):
            pretrained()
    assert not any(n.endswith(CFG.filename) for n in os.listdir(home / "checkpoints"))


# ============================================================================ hub.download

PAYLOAD = bytes(range(256)) * (3 * 4096 + 17)  # ~3 MB: several read chunks


def test_interrupted_download_resumes_with_range(home: Path) -> None:
    with file_server({"w.bin": PAYLOAD}, cut_first=True) as server:
        url = server.url("w.bin")
        with pytest.raises(DownloadError, match="resume") as excinfo:
            hub.download(url, "w.bin", progress=False)
        assert url in str(excinfo.value)
        folder = home / "checkpoints"
        # no file that looks finished; the first response's ETag is kept for If-Range
        assert sorted(os.listdir(folder)) == ["w.bin.partial", "w.bin.partial.validator"]
        half = (folder / "w.bin.partial").stat().st_size
        assert half == len(PAYLOAD) // 2
        validator = (folder / "w.bin.partial.validator").read_text().strip()
        path = hub.download(url, "w.bin", progress=False)
        assert [r.headers.get("Range") for r in server.requests] == [None, f"bytes={half}-"]
        assert server.requests[1].headers.get("If-Range") == validator
    assert path == folder / "w.bin"
    assert not (folder / "w.bin.partial.validator").exists()
    assert_cached(home, "w.bin", PAYLOAD)


def test_file_changed_on_the_server_is_not_spliced(home: Path) -> None:
    """Resume is guarded by If-Range: a file that changed between attempts is downloaded afresh."""
    new = bytes(reversed(PAYLOAD))
    with file_server({"w.bin": PAYLOAD}, cut_first=True) as server:
        with pytest.raises(DownloadError, match="resume"):
            hub.download(server.url("w.bin"), "w.bin", progress=False)
        server.files["w.bin"] = new
        hub.download(server.url("w.bin"), "w.bin", progress=False)
        assert server.requests[1].headers.get("Range") and server.requests[1].headers.get("If-Range")
    assert_cached(home, "w.bin", new)


def test_server_ignoring_range_still_gives_the_right_file(home: Path) -> None:
    with file_server({"w.bin": PAYLOAD}, cut_first=True, ignore_range=True) as server:
        with pytest.raises(DownloadError, match="resume"):
            hub.download(server.url("w.bin"), "w.bin", progress=False)
        hub.download(server.url("w.bin"), "w.bin", progress=False)
        assert server.requests[1].headers.get("Range")  # asked for a range, got the whole file
    assert_cached(home, "w.bin", PAYLOAD)


def test_stale_partial_longer_than_the_file_starts_over(home: Path) -> None:
    (home / "checkpoints").mkdir(parents=True)
    (home / "checkpoints" / "w.bin.partial").write_bytes(b"\0" * (len(PAYLOAD) + 10))
    with file_server({"w.bin": PAYLOAD}) as server:
        hub.download(server.url("w.bin"), "w.bin", progress=False)
        assert [r.headers.get("Range") for r in server.requests] == [f"bytes={len(PAYLOAD) + 10}-", None]
    assert_cached(home, "w.bin", PAYLOAD)


def test_expected_sha256(home: Path) -> None:
    good = hashlib.sha256(PAYLOAD).hexdigest()
    with file_server({"w.bin": PAYLOAD}) as server:
        with pytest.raises(DownloadError, match="sha256") as excinfo:
            hub.download(server.url("w.bin"), "w.bin", sha256="00" * 32, progress=False)
        assert "00" * 32 in str(excinfo.value)
        assert os.listdir(home / "checkpoints") == []  # neither a final file nor a partial one
        path = hub.download(server.url("w.bin"), "w.bin", sha256=good.upper(), progress=False)
        assert hub.download(server.url("w.bin"), "w.bin", sha256=good, progress=False) == path
        assert len(server.requests) == 2
    assert_cached(home, "w.bin", PAYLOAD)


def test_cached_file_without_sidecar_gets_one_and_is_then_checked(home: Path) -> None:
    folder = home / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(PAYLOAD)  # e.g. copied in by hand
    with file_server({"w.bin": PAYLOAD}) as server:
        hub.download(server.url("w.bin"), "w.bin", progress=False)
        assert server.requests == []
        assert_cached(home, "w.bin", PAYLOAD)  # its sha256 is recorded on first use
        (folder / "w.bin").write_bytes(PAYLOAD[:-1])  # later damaged
        hub.download(server.url("w.bin"), "w.bin", progress=False)
        assert len(server.requests) == 1
    assert_cached(home, "w.bin", PAYLOAD)


def test_url_cache_names_and_file_urls(home: Path, tmp_path: Path) -> None:
    src = tmp_path / "src" / "model.pth"
    src.parent.mkdir()
    src.write_bytes(PAYLOAD)
    path = hub.download(src.as_uri(), progress=False)
    assert path.parent == home / "checkpoints" and path.name.endswith("-model.pth")
    assert_cached(home, path.name, PAYLOAD)
    missing = (tmp_path / "src" / "missing.pth").as_uri()
    with pytest.raises(DownloadError, match="could not download"):
        hub.download(missing, progress=False)


def test_a_server_that_does_not_speak_http(home: Path) -> None:
    server = RawServer(b"SSH-2.0-OpenSSH_9.6\r\n\r\n")
    try:
        url = f"{server.base_url}/w.bin"
        with pytest.raises(DownloadError) as excinfo:
            hub.download(url, "w.bin", progress=False, hint="Pass a local file instead.")
    finally:
        server.close()
    assert url in str(excinfo.value) and "Pass a local file instead." in str(excinfo.value)
    assert not (home / "checkpoints" / "w.bin").exists()
