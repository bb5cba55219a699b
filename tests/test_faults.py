"""Fault injection: servers that trickle, stall, truncate, serve web pages or corrupt bytes (then get
fixed); decompression bombs; a full disk; read-only folders; kill -9 in the middle of a download
and of a write; directory symlink loops.

Everything is real: loopback HTTP servers (tests/_servers.py, each response bounded in time),
files, subprocesses killed with SIGKILL, a file-size limit (RLIMIT_FSIZE) for "disk full", and
a size-limited or read-only tmpfs in a private mount namespace (`unshare -rm`) where the
machine allows one.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import resource
import shutil
import signal
import struct
import subprocess
import sys
import termios
import textwrap
import time
import zipfile
import zlib
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from _checkpoints import golden_file, tiny_model
from _helpers import ROOT, run_cli
from _servers import file_server

from gpunet import DownloadError, WeightsError, create_model, get_pretrained_config, hub
from gpunet._io import atomic_write_bytes
from gpunet.data import ImageFolder, expand_inputs
from gpunet.errors import SettingError
from gpunet.weights import read_checkpoint

MODEL = "gpunet_0"
CFG = get_pretrained_config(MODEL)
PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


@pytest.fixture(autouse=True)
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "gpunet-home"
    monkeypatch.setenv("GPUNET_HOME", str(path))
    for name in ("GPUNET_NGC_MIRROR", hub.TIMEOUT_ENV, hub.STALL_TIMEOUT_ENV):
        monkeypatch.delenv(name, raising=False)
    return path


@pytest.fixture(scope="session")
def ngc_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return golden_file(tmp_path_factory.getbasetemp() / "golden-checkpoints", MODEL, "zip")


@pytest.fixture(scope="session")
def tiny_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small NGC-style zip (one .pth.tar member) of the tiny test model."""
    folder = tmp_path_factory.mktemp("tiny")
    torch.save({"state_dict": tiny_model(1).state_dict()}, folder / "tiny.pth.tar")
    with zipfile.ZipFile(folder / "tiny.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(folder / "tiny.pth.tar", "tiny.pth.tar")
    return folder / "tiny.zip"


def cache_files(home: Path) -> list[str]:
    folder = home / "checkpoints"
    return sorted(os.listdir(folder)) if folder.is_dir() else []


def pretrained() -> torch.nn.Module:
    return create_model(MODEL, pretrained=True, progress=False)


# ============================================================================ slow and silent servers

@pytest.mark.parametrize(("options", "limits", "words"), [
    # the server: 1 byte every 2 s; nothing arrives within the 1 s stall timeout
    ({"chunk_size": 1, "chunk_delay": 2.0}, {"stall_timeout": 1}, ["stalled", "1 s", hub.STALL_TIMEOUT_ENV]),
    # bytes keep coming, but fewer than STALL_BYTES per stall window
    ({"chunk_size": 16, "chunk_delay": 0.1}, {"stall_timeout": 1}, ["stalled", "less than", hub.STALL_TIMEOUT_ENV]),
    # fast enough never to stall, too slow for the overall deadline
    ({"chunk_size": 4096, "chunk_delay": 0.05}, {"timeout": 1.5}, ["1.5 s", "overall deadline", hub.TIMEOUT_ENV]),
    # headers, then silence
    ({"silent": True}, {"stall_timeout": 1}, ["nothing arrived", hub.STALL_TIMEOUT_ENV]),
])
def test_slow_servers_end_with_a_named_timeout(home: Path, options: dict[str, object],
                                               limits: dict[str, float], words: list[str]) -> None:
    with file_server({"w.bin": PAYLOAD}, **options) as server:  # type: ignore[arg-type]
        start = time.monotonic()
        with pytest.raises(DownloadError) as excinfo:
            hub.download(server.url("w.bin"), "w.bin", progress=False, **limits)
        elapsed = time.monotonic() - start
    message = str(excinfo.value)
    assert elapsed < 4, elapsed
    for word in words:
        assert word in message, (word, message)
    partial = home / "checkpoints" / "w.bin.partial"
    assert f"rm -f {partial}" in message  # how to clear what was left
    assert "w.bin" not in cache_files(home)  # nothing that looks finished


def test_timeouts_from_the_environment(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(hub.STALL_TIMEOUT_ENV, "0.5")
    with file_server({"w.bin": PAYLOAD}, silent=True) as server:
        with pytest.raises(DownloadError, match=f"0.5 s .*{hub.STALL_TIMEOUT_ENV}"):
            hub.download(server.url("w.bin"), "w.bin", progress=False)
    monkeypatch.setenv(hub.TIMEOUT_ENV, "soon")
    with pytest.raises(SettingError, match=f"{hub.TIMEOUT_ENV}=soon: expected a number of seconds"):
        hub.download("http://127.0.0.1:9/w.bin", "w.bin", progress=False)
    monkeypatch.delenv(hub.TIMEOUT_ENV)
    with pytest.raises(SettingError, match="stall_timeout=-1: expected"):
        hub.download("http://127.0.0.1:9/w.bin", "w.bin", progress=False, stall_timeout=-1)


def test_progress_is_a_line_when_not_interactive(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with file_server({"w.bin": PAYLOAD}) as server:
        hub.download(server.url("w.bin"), "w.bin", progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"gpunet: downloading {server.url('w.bin')} (1.0 MiB) into {home / 'checkpoints'}"
    assert lines[-1].startswith("gpunet: w.bin: 1.0 MiB in ") and len(lines) == 2


def test_progress_is_a_bar_on_a_terminal(home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty is 0 columns wide
    with os.fdopen(slave, "w") as terminal:
        monkeypatch.setattr(sys, "stderr", terminal)
        with file_server({"w.bin": PAYLOAD}) as server:
            hub.download(server.url("w.bin"), "w.bin", progress=True)
        terminal.flush()
        os.set_blocking(master, False)
        shown = os.read(master, 1 << 16).decode(errors="replace")
    os.close(master)
    assert "w.bin" in shown and "%|" in shown and "gpunet: downloading" not in shown


# ============================================================================ bad files never become cache entries

def flipped(data: bytes) -> bytes:
    out = bytearray(data)
    out[len(out) // 2] ^= 0xFF
    return bytes(out)


HTML = b"<!DOCTYPE html>\n<html><head><title>503 Service Unavailable</title></head><body>busy</body></html>\n"


@pytest.mark.parametrize("fault", ["corrupt", "html", "truncated-no-length"])
def test_bad_mirror_file_is_not_cached_and_recovers_once_fixed(
        ngc_zip: Path, home: Path, monkeypatch: pytest.MonkeyPatch, fault: str) -> None:
    good = ngc_zip.read_bytes()
    bad = {"corrupt": flipped(good), "html": HTML, "truncated-no-length": good}[fault]
    options = {"send_length": False, "cut_at": len(good) // 2} if fault == "truncated-no-length" else {}
    with file_server({CFG.filename: bad}, **options) as server:  # type: ignore[arg-type]
        monkeypatch.setenv("GPUNET_NGC_MIRROR", server.base_url)
        with pytest.raises(DownloadError) as excinfo:
            pretrained()
        message = str(excinfo.value)
        assert "not valid" in message and "not cached" in message, message
        assert {"corrupt": "CRC", "html": "web page", "truncated-no-length": "zip"}[fault] in message
        assert cache_files(home) == []  # neither a final file nor a partial one
        server.files[CFG.filename], server.cut_at, server.send_length = good, None, True  # the mirror is fixed
        model = pretrained()
    assert cache_files(home) == [CFG.filename, CFG.filename + ".sha256"]
    assert hub.file_sha256(home / "checkpoints" / CFG.filename) == hub.file_sha256(ngc_zip)
    assert model.num_classes == 1000


def test_unloadable_download_from_a_url_is_not_cached(tmp_path: Path, home: Path) -> None:
    """A pickle cut short (no Content-Length, not a zip): only loading it shows it is incomplete."""
    legacy = tmp_path / "tiny.pth"
    torch.save(tiny_model(1).state_dict(), legacy, _use_new_zipfile_serialization=False)
    data = legacy.read_bytes()
    with file_server({"tiny.pth": data}, send_length=False, cut_at=len(data) - 100) as server:
        with pytest.raises(DownloadError, match="not valid: .*not a PyTorch checkpoint.*not cached"):
            create_model(tiny_model(1).arch, weights=server.url("tiny.pth"), progress=False)
        assert cache_files(home) == []
        server.cut_at = None
        model = create_model(tiny_model(1).arch, weights=server.url("tiny.pth"), progress=False)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), tiny_model(1).state_dict().values(),
                                                   strict=True))


def test_bad_cache_entry_says_how_to_clear_it_and_recovers(ngc_zip: Path, home: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """An entry cached by an older gpunet, whose recorded sha256 matches but whose checkpoint is bad."""
    folder = home / "checkpoints"
    folder.mkdir(parents=True)
    cached = folder / CFG.filename
    with zipfile.ZipFile(cached, "w") as zf:
        zf.writestr(f"{CFG.nvidia_key}.pth.tar", b"\x80\x02 not really a pickle")
    (folder / f"{CFG.filename}.sha256").write_text(hub.file_sha256(cached) + "\n")
    with file_server({CFG.filename: ngc_zip.read_bytes()}) as server:
        monkeypatch.setenv("GPUNET_NGC_MIRROR", server.base_url)
        with pytest.raises(WeightsError) as excinfo:
            pretrained()
        command = f"rm -f {cached} {cached}.sha256"
        assert command in str(excinfo.value) and "download cache" in str(excinfo.value)
        assert len(server.requests) == 0
        subprocess.run(command, shell=True, check=True)  # noqa: S602 (the very command the message gives)
        pretrained()
        assert len(server.requests) == 1


def test_cached_file_without_record_is_verified_before_use(tiny_zip: Path, home: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    folder = home / "checkpoints"
    folder.mkdir(parents=True)
    (folder / "tiny.zip").write_bytes(tiny_zip.read_bytes()[:-200])  # copied in by hand, cut short
    with file_server({"tiny.zip": tiny_zip.read_bytes()}) as server:
        path = hub.download(server.url("tiny.zip"), "tiny.zip", progress=False)
        assert len(server.requests) == 1
    assert "is not valid" in capsys.readouterr().err
    assert path.read_bytes() == tiny_zip.read_bytes()
    read_checkpoint(path)


# ============================================================================ decompression bombs

def _deflated_zeros(mib: int) -> bytes:
    """A raw deflate stream of `mib` MiB of zeros, built from one compressed MiB (about 1 KB each)."""
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = c.compress(b"\0" * (1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)  # self-contained: repeatable
    return block * mib + c.flush()


def raw_zip(members: list[tuple[str, int, int]], data: bytes) -> bytes:
    """A zip of one deflated `data`, listed in the directory as `members` (name, declared size, CRC).

    Several members all point at the same bytes (the "overlapping" bomb): a small file that
    declares GiBs in total.
    """
    central = b""
    for name, size, crc in members:
        fn = name.encode()
        central += struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(data), size, len(fn),
                               0, 0, 0, 0, 0, 0) + fn
    name, size, crc = members[0]
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(data), size, len(name), 0)
    local += name.encode() + data
    eocd = struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(central), len(local), 0)
    return local + central + eocd


GIB3 = 3 << 30


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The issue's bomb (3 MB inflating to 3 GiB), one whose header lies, and one of many overlapping members."""
    folder = tmp_path_factory.mktemp("bombs")
    zeros = _deflated_zeros(3 << 10)
    files = {
        "honest": raw_zip([("0.65ms.pth.tar", GIB3, 0)], zeros),
        "lying": raw_zip([("0.65ms.pth.tar", 1 << 20, zlib.crc32(b"\0" * (1 << 20)))], zeros),
        "overlapping": raw_zip([(f"part{i}.bin", 90 << 20, 0) for i in range(50)], os.urandom(1 << 20)),
    }
    for name, data in files.items():
        (folder / f"{name}.zip").write_bytes(data)
    return {name: folder / f"{name}.zip" for name in files}


@pytest.mark.parametrize(("bomb", "words"), [
    ("honest", ["0.65ms.pth.tar", "3072.0 MiB", "ZIP_MAX_RATIO", "decompression bomb"]),
    ("lying", ["corrupt"]),  # zipfile stops at the declared 1 MiB: zeros, not a checkpoint
    ("overlapping", ["ZIP_MAX_BYTES", "4096.0 MiB", "decompression bomb"]),
])
def test_zip_bomb_is_refused_fast_with_bounded_memory(bombs: dict[str, Path], bomb: str, words: list[str]) -> None:
    path = bombs[bomb]
    assert path.stat().st_size < 4 << 20
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.monotonic()
    with pytest.raises(WeightsError) as excinfo:
        read_checkpoint(path)
    elapsed = time.monotonic() - start
    grown_mib = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024  # ru_maxrss: KiB
    assert elapsed < 2 and grown_mib < 200, (elapsed, grown_mib)
    message = str(excinfo.value)
    assert str(path) in message and "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_zip_bomb_from_a_mirror_is_not_cached(bombs: dict[str, Path], home: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    with file_server({CFG.filename: bombs["honest"].read_bytes()}) as server:
        monkeypatch.setenv("GPUNET_NGC_MIRROR", server.base_url)
        start = time.monotonic()
        with pytest.raises(DownloadError, match="decompression bomb.*not cached"):
            pretrained()
    assert time.monotonic() - start < 3
    assert cache_files(home) == []


def test_checkpoint_that_compresses_well_is_not_a_bomb(tmp_path: Path) -> None:
    """The ratio limit spares small members: 4 MiB of zeros compress far beyond 100:1 and still load."""
    torch.save({"state_dict": {"w": torch.zeros(1 << 20)}}, tmp_path / "z.pth.tar")
    with zipfile.ZipFile(tmp_path / "z.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.write(tmp_path / "z.pth.tar", "z.pth.tar")
        ratio = zf.infolist()[0].file_size / zf.infolist()[0].compress_size
    assert ratio > 100
    state_dict, _ = read_checkpoint(tmp_path / "z.zip")
    assert torch.equal(state_dict["w"], torch.zeros(1 << 20))


# ============================================================================ a full disk

@contextlib.contextmanager
def file_size_limit(limit: int) -> Iterator[None]:
    """RLIMIT_FSIZE for this process: a write past `limit` bytes fails with EFBIG (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_full_disk_during_a_download(home: Path) -> None:
    with file_server({"w.bin": PAYLOAD * 3}) as server:
        with file_size_limit(1 << 20), pytest.raises(DownloadError) as excinfo:
            hub.download(server.url("w.bin"), "w.bin", progress=False)
        message = str(excinfo.value)
        assert "could not write" in message and "File too large" in message and "GPUNET_HOME" in message, message
        assert "w.bin" not in cache_files(home) and "rm -f" in message
        path = hub.download(server.url("w.bin"), "w.bin", progress=False)  # space again: it resumes
        assert server.requests[-1].headers.get("Range") == f"bytes={1 << 20}-"
    assert path.read_bytes() == PAYLOAD * 3


def test_full_disk_during_an_atomic_write_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "model.bin"
    target.write_bytes(b"old")
    with file_size_limit(1 << 20), pytest.raises(OSError, match="File too large"):
        atomic_write_bytes(target, PAYLOAD * 2)
    assert target.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["model.bin"]  # no temporary file left either


# ======================================================================== private mounts: full tmpfs, read-only folder

def _namespace_available() -> bool:
    if shutil.which("unshare") is None:
        return False
    probe = subprocess.run(["unshare", "-rm", "true"], capture_output=True)
    return probe.returncode == 0


NAMESPACE = pytest.mark.skipif(not _namespace_available(), reason="no unprivileged mount namespace (unshare -rm)")


def in_namespace(mounts: str, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run `command` after the shell `mounts` in a private user+mount namespace (the network is shared)."""
    script = f"set -e; {mounts}; exec \"$@\""
    full_env = {**os.environ, "PYTHONWARNINGS": "ignore", **env}
    full_env.pop("GPUNET_NGC_MIRROR", None)
    return subprocess.run(["unshare", "-rm", "sh", "-c", script, "sh", *command], capture_output=True, text=True,
                          env=full_env, cwd=ROOT, timeout=120)


@NAMESPACE
def test_download_onto_a_full_disk_and_into_a_read_only_folder(ngc_zip: Path, tmp_path: Path) -> None:
    """A real full tmpfs (ENOSPC) and a read-only one (EROFS): one-line errors, no file that looks finished."""
    full, readonly = tmp_path / "full", tmp_path / "readonly"
    full.mkdir()
    readonly.mkdir()
    mounts = f"mount -t tmpfs -o size=64k tmpfs {full} && mount -t tmpfs -o ro tmpfs {readonly}"
    code = textwrap.dedent(f"""
        import os, sys
        from gpunet import create_model
        from gpunet.errors import GPUNetError
        for home in ({str(full)!r}, {str(readonly)!r}):
            os.environ["GPUNET_HOME"] = home
            try:
                create_model({MODEL!r}, weights=sys.argv[1], progress=False)
            except GPUNetError as exc:
                print(type(exc).__name__, exc)
            folder = home + "/checkpoints"
            print(sorted(n.split("-", 1)[1] for n in os.listdir(folder)) if os.path.isdir(folder) else [])
    """)
    with file_server({"model.zip": ngc_zip.read_bytes()}) as server:
        result = in_namespace(mounts, [sys.executable, "-c", code, server.url("model.zip")], {})
    lines = result.stdout.splitlines()
    assert result.returncode == 0, result.stderr
    assert len(lines) == 4, lines
    assert lines[0].startswith("DownloadError could not write") and "No space left on device" in lines[0], lines[0]
    assert "GPUNET_HOME" in lines[0] and "rm -f" in lines[0]
    assert lines[1] == "['model.zip.partial', 'model.zip.partial.validator']"  # resumable; no final file
    assert lines[2].startswith("DownloadError cannot create the download cache") and "Read-only" in lines[2]
    assert "GPUNET_HOME" in lines[2] and lines[3] == "[]"


@NAMESPACE
def test_atomic_write_into_a_read_only_folder_keeps_the_old_file(tmp_path: Path) -> None:
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("old")
    code = ("from gpunet._io import atomic_write_bytes\n"
            "try:\n    atomic_write_bytes('out/keep.txt', b'new')\nexcept OSError as exc:\n    print(exc.errno)")
    mounts = f"mount --bind {folder} {folder} && mount -o remount,bind,ro {folder} && cd {tmp_path}"
    result = in_namespace(mounts, [sys.executable, "-c", code], {})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "30"  # EROFS, raised before anything was written
    assert (folder / "keep.txt").read_text() == "old" and os.listdir(folder) == ["keep.txt"]


# ============================================================================ two processes, one file

DOWNLOAD = "import sys; from gpunet import hub; print(hub.download(sys.argv[1], 'w.bin', progress=False))"


def test_two_processes_downloading_one_file_take_turns(home: Path) -> None:
    """The second waits for the first and uses its file: one transfer, nothing spliced, both succeed."""
    body = PAYLOAD * 2
    partial = home / "checkpoints" / "w.bin.partial"
    env = {**os.environ, "GPUNET_HOME": str(home)}
    with file_server({"w.bin": body}, chunk_size=1 << 17, chunk_delay=0.25) as server:
        cmd = [sys.executable, "-c", DOWNLOAD, server.url("w.bin")]
        first = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 60
        while not (partial.exists() and partial.stat().st_size > 0):  # the first is transferring
            assert first.poll() is None and time.monotonic() < deadline, first.communicate()
            time.sleep(0.02)
        second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        out, err = first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, err + second.stderr
    assert out.strip() == second.stdout.strip() == str(home / "checkpoints" / "w.bin")
    assert "another process is downloading w.bin; waiting for it" in second.stderr
    assert len(server.requests_for("w.bin")) == 1  # the second did not fetch it again
    assert (home / "checkpoints" / "w.bin").read_bytes() == body
    assert cache_files(home) == ["w.bin", "w.bin.sha256"]


def test_waiting_for_another_download_has_the_deadline(home: Path) -> None:
    """A process that holds the entry's lock past the deadline gets a named one-line error, not a hang."""
    from filelock import FileLock

    (home / "locks").mkdir(parents=True)
    with file_server({"w.bin": PAYLOAD}) as server:
        with FileLock(home / "locks" / "w.bin.lock"):
            start = time.monotonic()
            with pytest.raises(DownloadError, match=r"another process has been downloading .*w\.bin for over 0\.5 "
                                                    r"s \(it holds .*w\.bin\.lock\); stop it or raise the "
                                                    r"deadline \(GPUNET_DOWNLOAD_TIMEOUT\)"):
                hub.download(server.url("w.bin"), "w.bin", progress=False, timeout=0.5)
            assert time.monotonic() - start < 5 and server.requests == []
        assert hub.download(server.url("w.bin"), "w.bin", progress=False).read_bytes() == PAYLOAD  # released


# ============================================================================ kill -9

KILLED = textwrap.dedent("""
    import sys, threading, time
    from gpunet import hub
    from gpunet._io import atomic_write

    def slow_writer(tmp):
        with open(tmp, "wb") as f:
            f.write(b"half of the new file")
            f.flush()
            time.sleep(60)

    threading.Thread(target=atomic_write, args=(sys.argv[2], slow_writer), daemon=True).start()
    hub.download(sys.argv[1], "w.bin", progress=False)
""")


def test_kill_9_mid_download_and_mid_write_leaves_no_half_file(home: Path, tmp_path: Path) -> None:
    target = tmp_path / "out" / "results.json"
    target.parent.mkdir()
    target.write_text("old results")
    partial = home / "checkpoints" / "w.bin.partial"
    body = PAYLOAD * 4
    with file_server({"w.bin": body}, chunk_size=1 << 16, chunk_delay=0.5) as server:
        proc = subprocess.Popen([sys.executable, "-c", KILLED, server.url("w.bin"), str(target)],
                                env={**os.environ, "GPUNET_HOME": str(home)})
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not (
                    partial.exists() and partial.stat().st_size > 0 and len(os.listdir(target.parent)) == 2):
                assert proc.poll() is None, "the process ended before it was killed"
                time.sleep(0.05)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
        assert partial.stat().st_size > 0
        assert cache_files(home) == ["w.bin.partial", "w.bin.partial.validator"]  # nothing looks finished
        assert target.read_text() == "old results"  # only a hidden temporary file beside it
        assert [n for n in os.listdir(target.parent) if n != "results.json"][0].startswith(".results.json.")
        server.chunk_delay = 0
        done = partial.stat().st_size
        path = hub.download(server.url("w.bin"), "w.bin", progress=False)
        assert server.requests[-1].headers.get("Range") == f"bytes={done}-"  # resumed, not restarted
    assert path.read_bytes() == body


# ============================================================================ directory symlink loops

@pytest.fixture
def looped(tmp_path: Path) -> Path:
    """root/cls/{a.png, sub/b.png} with two links to itself and one to its parent in cls and in sub."""
    from PIL import Image

    root = tmp_path / "data"
    sub = root / "cls" / "sub"
    sub.mkdir(parents=True)
    for path in (root / "cls" / "a.png", sub / "b.png"):
        Image.new("RGB", (8, 8)).save(path)
    for folder in (root / "cls", sub):
        (folder / "self1").symlink_to(".")
        (folder / "self2").symlink_to(folder)
        (folder / "up").symlink_to("..")
    return root


def test_symlink_loops_end_fast_with_each_file_once(looped: Path) -> None:
    cls = looped / "cls"
    want = [str(cls / "a.png"), str(cls / "sub" / "b.png")]
    start = time.monotonic()
    assert expand_inputs([str(looped)]) == (want, [])
    assert expand_inputs([str(cls / "self1")]) == ([str(cls / "self1" / "a.png"), str(cls / "self1" / "sub" / "b.png")],
                                                   [])
    assert expand_inputs([f"{looped}/**/*.png"]) == (want, [])
    assert expand_inputs([f"{cls}/**"]) == (want, [])
    dataset = ImageFolder(looped)
    assert [p for p, _ in dataset.samples] == want
    assert time.monotonic() - start < 2


@pytest.mark.slow  # a fresh `gpunet` process (torch import); the library test above covers the walk itself
def test_cli_predict_on_a_looped_folder(looped: Path, tmp_path: Path) -> None:
    arch = tmp_path / "tiny.json"
    tiny_model(1).arch.save(arch)
    result = run_cli(["predict", str(looped), "--model", str(arch), "--random-weights", "--format", "csv",
                      "--top-k", "1"], timeout=60)
    assert result.returncode == 0, result.stderr
    rows = [line for line in result.stdout.splitlines()[1:] if line.strip()]
    assert len(rows) == 2 and "a.png" in rows[0] and "b.png" in rows[1], result.stdout
