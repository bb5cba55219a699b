"""`gpunet serve` end to end: the real command on a loopback port, Ray Serve and all.

One server for the module (Ray's start is the slow part): a burst of concurrent requests checked
against a real `gpunet predict --format json`, the bad requests, Ray's metrics showing the
batches, the demo page in headless Chromium, a model replica killed under load, and SIGTERM,
which must drain, stop and leave no process behind. The tests run in file order.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _helpers import ROOT, odd_mode_images, rgb_array, run_cli, save_tiny_classifier
from PIL import Image

pytest.importorskip("ray.serve")
pytest.importorskip("python_multipart")
requests = pytest.importorskip("requests")  # comes with Ray

MAX_BYTES = 2_000_000
MAX_IMAGES = 4
MODEL_REPLICA = "ray::ServeReplica:gpunet-model:GPUNetModel"
CONTENT_TYPES = {".jpg": "image/jpeg", ".png": "image/png", ".tif": "image/tiff"}


@dataclass
class Server:
    url: str
    metrics_url: str
    proc: subprocess.Popen[bytes]
    log: Path
    expected: dict[str, list[dict[str, Any]]]  # image file name -> predict's top-5
    files: dict[str, Path]
    bad: dict[str, Path] = field(default_factory=dict)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
    return tree


def descendants(pid: int) -> set[int]:
    """Every process started under `pid` (Ray's daemons, workers and replicas)."""
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def model_replicas(server: Server) -> list[int]:
    return [p for p in descendants(server.proc.pid) if _cmdline(p).startswith(MODEL_REPLICA)]


def _images(folder: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """Good images of awkward kinds (odd modes, EXIF rotation, a large photo) and the bad ones."""
    odd = odd_mode_images(folder)
    good = {p.name: p for k, p in odd.items() if k not in ("corrupt", "not_image")}
    rotated = Image.fromarray(rgb_array(48, 32, 7))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90
    rotated.save(folder / "exif_rotated.jpg", exif=exif, quality=92)
    Image.fromarray(rgb_array(1200, 900, 8)).save(folder / "large.jpg", quality=90)
    for name in ("exif_rotated.jpg", "large.jpg"):
        good[name] = folder / name
    return good, {"corrupt": odd["corrupt"], "not_image": odd["not_image"]}


def _predict(model: Path, files: dict[str, Path]) -> dict[str, list[dict[str, Any]]]:
    r = run_cli(["predict", *map(str, files.values()), "--model", str(model), "--format", "json", "--top-k", "5"])
    assert r.returncode == 0, r.stderr
    return {Path(res["file"]).name: res["topk"] for res in json.loads(r.stdout)["results"]}


def _wait_healthy(server: Server, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            pytest.fail(f"gpunet serve exited with {server.proc.returncode}:\n{server.stderr()[-3000:]}")
        try:
            if "gpunet: serving at" in server.stderr() and \
                    requests.get(server.url + "v1/health", timeout=5).status_code == 200:
                return
        except (requests.ConnectionError, requests.Timeout):  # the proxy is not up, or the app not yet
            pass
        time.sleep(1)
    pytest.fail(f"gpunet serve not healthy after {timeout} s:\n{server.stderr()[-3000:]}")


def _stop(proc: subprocess.Popen[bytes], started: set[int]) -> None:
    """Teardown for a test that failed before SIGTERM: stop the command and anything it left."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    for pid in started:
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("serve_e2e")
    model = save_tiny_classifier(folder, seed=5)
    files, bad = _images(folder / "images")
    expected = _predict(model, files)
    port, metrics_port = _free_port(), _free_port()
    log = folder / "serve.log"
    env = {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "gpunet", "serve", str(model), "--port", str(port), "--metrics-port",
           str(metrics_port), "--num-cpus", "2", "--max-batch-size", "8", "--batch-wait-ms", "20",
           "--max-bytes", str(MAX_BYTES), "--max-images", str(MAX_IMAGES), "--drain-timeout", "5"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=ROOT, start_new_session=True)
    srv = Server(f"http://127.0.0.1:{port}/", f"http://127.0.0.1:{metrics_port}/metrics", proc, log, expected,
                 files, bad)
    started: set[int] = set()
    try:
        _wait_healthy(srv)
        started = descendants(proc.pid)
        yield srv
    finally:
        _stop(proc, started | descendants(proc.pid))


# ---------------------------------------------------------------------------- helpers for requests

def post(server: Server, data: bytes | None = None, content_type: str | None = None, *, files: Any = None,
         params: dict[str, Any] | None = None, timeout: float = 120) -> Any:
    headers = {"Content-Type": content_type} if content_type else {}
    return requests.post(server.url + "v1/classify", data=data, files=files, headers=headers, params=params,
                         timeout=timeout)


def post_file(server: Server, name: str, top_k: int | None = None) -> Any:
    path = server.files[name]
    return post(server, path.read_bytes(), CONTENT_TYPES[path.suffix], params={"top_k": top_k} if top_k else None)


def assert_matches_predict(server: Server, source: str, topk: list[dict[str, Any]], k: int = 5) -> None:
    want = server.expected[source][:k]
    assert [t["index"] for t in topk] == [t["index"] for t in want], source
    assert [(t["rank"], t["label"], t["class_id"]) for t in topk] == \
        [(t["rank"], t["label"], t["class_id"]) for t in want], source
    assert [t["prob"] for t in topk] == pytest.approx([t["prob"] for t in want], rel=1e-5, abs=1e-9), source


# ---------------------------------------------------------------------------- the tests, in order

def test_health_model_and_schema(server) -> None:
    assert requests.get(server.url + "v1/health", timeout=10).json() == {"status": "ok"}
    info = requests.get(server.url + "v1/model", timeout=10).json()
    assert (info["name"], info["runtime"], info["precision"], info["input_size"]) == \
        ("custom", "torch", "fp32", [3, 32, 32])
    assert info["num_classes"] == len(info["labels"]) == 1000
    assert info["limits"] == {"top_k": 5, "max_batch_size": 8, "batch_wait_ms": 20.0, "max_bytes": MAX_BYTES,
                              "max_pixels": 89_478_485, "max_images": MAX_IMAGES}
    schema = requests.get(server.url + "openapi.json", timeout=10).json()
    classify = schema["paths"]["/v1/classify"]["post"]
    assert {"image/*", "multipart/form-data"} <= set(classify["requestBody"]["content"])
    assert {"200", "400", "413", "415"} <= set(classify["responses"])
    assert {"/v1/health", "/v1/model"} <= set(schema["paths"])
    assert "serving at " + server.url in server.stderr()


def test_burst_of_concurrent_requests_matches_predict(server) -> None:
    """200 requests from 16 threads, raw bodies and multipart uploads of several images: every answer is
    `gpunet predict`'s for that file."""
    names = sorted(server.files)

    def one(i: int) -> None:
        if i % 10 == 0:
            chosen = [names[(i + j) % len(names)] for j in range(3)]
            parts = [("image", (n, server.files[n].read_bytes(), CONTENT_TYPES[server.files[n].suffix]))
                     for n in chosen]
            r = post(server, files=parts, params={"top_k": 3})
            assert r.status_code == 200, r.text
            results = r.json()["results"]
            assert [res["source"] for res in results] == chosen
            for res in results:
                assert_matches_predict(server, res["source"], res["topk"], k=3)
        else:
            name = names[i % len(names)]
            r = post_file(server, name)
            assert r.status_code == 200, r.text
            (res,) = r.json()["results"]
            assert res["source"] == "body"
            assert_matches_predict(server, name, res["topk"])

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(one, range(200)))


def test_metrics_show_dynamic_batching(server) -> None:
    """Ray's Prometheus metrics: the model replica ran batches of more than one image on average."""
    deadline = time.monotonic() + 90
    while True:
        text = requests.get(server.metrics_url, timeout=10).text
        sums = _metric(text, "ray_serve_actual_batch_size_sum")
        counts = _metric(text, "ray_serve_actual_batch_size_count")
        if counts and sum(counts) >= 20 or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert counts and sum(counts) >= 20, "no batch metrics from Ray after 90 s"
    assert sum(sums) / sum(counts) > 1.2, (sums, counts)
    assert 'route="/v1/classify"' in text and "ray_serve_num_http_requests_total" in text


def _metric(text: str, name: str) -> list[float]:
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith(name + "{") and 'deployment="GPUNetModel"' in line]


def _png(size: tuple[int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("1", size).save(buf, "PNG")
    return buf.getvalue()


def _chunked(data: bytes) -> Iterator[bytes]:
    for i in range(0, len(data), 65536):
        yield data[i:i + 65536]


def _bad_requests(server: Server) -> list[tuple[str, Any, int, str]]:
    """(what, request thunk, status, words in the error)."""
    jpeg = server.files["rgb.jpg"].read_bytes()
    noise = np.random.default_rng(0).integers(0, 256, MAX_BYTES + 1, dtype=np.uint8).tobytes()
    u = server.url
    return [
        ("not an image", lambda: post(server, server.bad["not_image"].read_bytes(), "image/png"), 400,
         "not an image"),
        ("truncated", lambda: post(server, server.bad["corrupt"].read_bytes(), "image/jpeg"), 400, "truncated"),
        ("bomb over Pillow's limit", lambda: post(server, _png((20000, 20000)), "image/png"), 413,
         "decompression bomb"),
        ("bomb over ours", lambda: post(server, _png((10000, 10000)), "image/png"), 413,
         "10000x10000 = 100000000 pixels is over the limit"),
        ("too large", lambda: post(server, noise, "image/jpeg"), 413, "--max-bytes"),
        ("too large, chunked", lambda: post(server, _chunked(noise), "image/jpeg"), 413,  # type: ignore[arg-type]
         f"more than {MAX_BYTES} bytes"),
        ("wrong content type", lambda: post(server, jpeg, "text/plain"), 415, "'text/plain'"),
        ("json", lambda: post(server, b'{"image": 1}', "application/json"), 415, "'application/json'"),
        ("no content type", lambda: post(server, jpeg), 415, "no Content-Type"),
        ("empty body", lambda: post(server, b"", "image/jpeg"), 400, "empty body"),
        ("too many images", lambda: post(server, files=[("i", (f"{n}.jpg", jpeg, "image/jpeg"))
                                                         for n in range(MAX_IMAGES + 1)]), 400,
         "bad multipart/form-data body: Too many files"),
        ("text field", lambda: post(server, files={"image": (None, "cat.jpg")}), 400, "is not a file"),
        ("bad multipart", lambda: post(server, b"--nope\r\n", "multipart/form-data; boundary=x"), 400,
         "multipart"),
        ("top_k 0", lambda: post(server, jpeg, "image/jpeg", params={"top_k": 0}), 400, "top_k"),
        ("top_k text", lambda: post(server, jpeg, "image/jpeg", params={"top_k": "five"}), 400, "top_k"),
        ("GET classify", lambda: requests.get(u + "v1/classify", timeout=30), 405, "Method Not Allowed"),
        ("unknown path", lambda: requests.get(u + "v2/classify", timeout=30), 404, "Not Found"),
    ]


def test_bad_requests_get_a_one_line_4xx_and_the_server_goes_on(server) -> None:
    replicas = model_replicas(server)
    for what, send, status, words in _bad_requests(server):
        r = send()
        assert r.status_code == status, f"{what}: {r.status_code} {r.text}"
        body = r.json()
        assert list(body) == ["error"] and "\n" not in body["error"] and words in body["error"], (what, body)
        assert requests.get(server.url + "v1/health", timeout=10).status_code == 200, what
    r = post_file(server, "rgb.jpg")
    assert r.status_code == 200
    assert_matches_predict(server, "rgb.jpg", r.json()["results"][0]["topk"])
    assert model_replicas(server) == replicas  # no replica died on the way


def test_demo_page_in_headless_chromium(server, tmp_path) -> None:
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    if not (browser and driver_path):
        pytest.skip("Debian's chromium and chromium-driver are not installed and could not be (`make test` "
                    "installs them with apt-get when run as root)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(driver_path))
    try:
        driver.get(server.url)
        WebDriverWait(driver, 30).until(lambda d: "custom, 32 px" in d.find_element(By.ID, "model").text)
        driver.find_element(By.ID, "file").send_keys(str(server.files["exif_rotated.jpg"]))
        WebDriverWait(driver, 60).until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "li.row")) == 5)
        rows = driver.find_elements(By.CSS_SELECTOR, "li.row")
        want = server.expected["exif_rotated.jpg"]
        assert [r.find_element(By.CLASS_NAME, "label").text for r in rows] == [t["label"] for t in want]
        assert [r.find_element(By.CLASS_NAME, "prob").text for r in rows] == \
            [f"{100 * t['prob']:.2f} %" for t in want]
        widths = [r.find_element(By.CSS_SELECTOR, ".bar span").get_attribute("style") for r in rows]
        assert widths[0] == f"width: {100 * want[0]['prob']:.2f}%;"
        driver.save_screenshot(str(tmp_path / "demo.png"))
        driver.find_element(By.ID, "file").send_keys(str(server.bad["not_image"]))
        WebDriverWait(driver, 30).until(lambda d: "error" in d.find_element(By.ID, "status").get_attribute("class"))
        assert "notes.png: body: not an image" in driver.find_element(By.ID, "status").text
        assert driver.find_elements(By.CSS_SELECTOR, "li.row") == []
    finally:
        driver.quit()


def test_a_killed_model_replica_is_restarted_and_requests_in_flight_are_retried(server) -> None:
    (replica,) = model_replicas(server)
    names = sorted(server.files)

    def one(i: int) -> tuple[int, str]:
        r = post_file(server, names[i % len(names)])
        if r.status_code == 200:
            assert_matches_predict(server, names[i % len(names)], r.json()["results"][0]["topk"])
        return r.status_code, r.text

    with ThreadPoolExecutor(8) as pool:
        pending = [pool.submit(one, i) for i in range(40)]
        time.sleep(0.3)
        os.kill(replica, signal.SIGKILL)
        answers = [f.result() for f in pending]
    for status, text in answers:  # answered after the restart, or told what happened
        assert status == 200 or (status == 503 and "replica died" in json.loads(text)["error"]), (status, text)
    assert any(status == 200 for status, _ in answers)
    print(f"model replica killed under load: statuses {sorted(status for status, _ in answers)}")
    (new,) = model_replicas(server)
    assert new != replica
    with ThreadPoolExecutor(8) as pool:
        assert [s for s, _ in pool.map(one, range(24))] == [200] * 24


def test_sigterm_drains_and_stops_leaving_no_process(server) -> None:
    started = descendants(server.proc.pid)
    assert any(_cmdline(p).startswith("ray::ProxyActor") for p in started)
    outcomes: list[Any] = []

    large = server.files["large.jpg"].read_bytes()

    def one(i: int) -> None:
        try:
            r = post(server, files=[("image", (f"{n}.jpg", large, "image/jpeg")) for n in range(2)])
            outcomes.append(r.status_code)
        except requests.ConnectionError as exc:  # sent after the proxy closed: never accepted
            outcomes.append(type(exc).__name__)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    time.sleep(0.3)
    began = time.monotonic()
    server.proc.send_signal(signal.SIGTERM)
    code = server.proc.wait(60)
    took = time.monotonic() - began
    for t in threads:
        t.join(60)
    log = server.stderr()
    assert code == 0, log[-3000:]
    assert "gpunet: stopping: draining in-flight requests" in log and "gpunet: stopped" in log
    assert took < 40, f"stopping took {took:.1f} s"
    # in flight when the signal came: answered; sent later: refused by the proxy (route gone) or not connected
    assert 200 in outcomes and all(o in (200, 404, 503, "ConnectionError") for o in outcomes), outcomes
    deadline = time.monotonic() + 15
    while (left := [p for p in started if _alive(p)]) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert left == [], [(p, _cmdline(p)[:80]) for p in left]
    with pytest.raises(requests.ConnectionError):
        requests.get(server.url + "v1/health", timeout=5)
    print(f"SIGTERM -> exit in {took:.1f} s; requests in flight: {outcomes}")
