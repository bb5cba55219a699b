#!/usr/bin/env python
"""Load check for `gpunet serve`: p50/p99 latency and requests/s at 1, 8 and 32 concurrent clients, with
dynamic batching on and off, printed as a table and saved as JSON.

For each batching mode it starts the real command (`python -m gpunet serve`, a local Ray on this
machine, a free loopback port), warms it up, then for each concurrency level runs that many client
threads, each posting the same image (raw JPEG body) back to back until the level's requests are
done; every answer must be a 200 with a top-5. Then it stops the server with SIGTERM. Both modes
run in the same invocation (with `--rounds N`, alternately, N times each, the table showing the
medians), so their ratios are measured under the same machine load.

    .venv/bin/python scripts/serve_load.py --model gpunet_0 --random-weights --img-size 224 -o serve_load.json
    .venv/bin/python scripts/serve_load.py --url http://127.0.0.1:8000/ --modes on   # a server you started
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import requests

from gpunet._io import atomic_write_bytes
from gpunet.timing import percentile

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(a: argparse.Namespace, max_batch_size: int, log: Path) -> tuple[subprocess.Popen[bytes], str]:
    """`gpunet serve` with this mode's batching; returns the process and its URL once it answers."""
    port = _free_port()
    weights = ["--random-weights"] if a.random_weights else ["--weights", a.weights] if a.weights else \
        ["--pretrained"] if a.pretrained else []
    cmd = [sys.executable, "-m", "gpunet", "serve", a.model, *weights, "--port", str(port),
           "--max-batch-size", str(max_batch_size), "--batch-wait-ms", str(a.batch_wait_ms),
           "--replicas", str(a.replicas), "--cpus-per-replica", str(a.cpus_per_replica), "--device", a.device,
           "--max-ongoing-requests", str(max(64, max_batch_size))]
    if a.img_size:
        cmd += ["--img-size", str(a.img_size)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"gpunet serve exited ({proc.returncode}); see {log}")
        if "gpunet: serving at" in log.read_text(errors="replace"):
            return proc, url
        time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    raise SystemExit(f"gpunet serve did not start in 300 s; see {log}")


def stop_server(proc: subprocess.Popen[bytes]) -> float:
    began = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)
    return time.monotonic() - began


def run_level(url: str, image: bytes, clients: int, total: int) -> dict[str, Any]:
    """`clients` threads posting back to back until `total` requests are answered."""
    latencies: list[float] = []
    failures: list[str] = []
    lock = threading.Lock()
    remaining = [total]

    def client() -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if remaining[0] == 0:
                        return
                    remaining[0] -= 1
                began = time.perf_counter()
                try:
                    r = session.post(url + "v1/classify", data=image, headers={"Content-Type": "image/jpeg"},
                                     timeout=300)
                    ok = r.status_code == 200 and len(r.json()["results"][0]["topk"]) == 5
                    failure = "" if ok else f"{r.status_code} {r.text[:200]}"
                except requests.RequestException as exc:  # a dropped connection counts, and the client goes on
                    failure = f"{type(exc).__name__}: {exc}"[:200]
                took = time.perf_counter() - began
                with lock:
                    if failure:
                        failures.append(failure)
                    else:
                        latencies.append(took)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    return {"clients": clients, "requests": total, "failed": len(failures), "failures": failures[:3],
            "seconds": round(wall, 3), "requests_per_s": round(len(latencies) / wall, 2),
            "p50_ms": round(1000 * percentile(latencies, 50), 1), "p99_ms": round(1000 * percentile(latencies, 99), 1)}


def measure(url: str, image: bytes, a: argparse.Namespace) -> list[dict[str, Any]]:
    run_level(url, image, 2, a.warmup)  # the first requests pay for lazy set-up (threads, caches): not counted
    rows = []
    for clients in a.concurrency:
        row = run_level(url, image, clients, max(a.requests, a.per_client * clients))
        print(f"  {clients:>3} clients: {row['requests_per_s']:6.2f} req/s, p50 {row['p50_ms']:7.1f} ms, "
              f"p99 {row['p99_ms']:7.1f} ms, {row['failed']} failed", flush=True)
        rows.append(row)
    return rows


def table(results: dict[str, list[dict[str, Any]]]) -> str:
    lines = ["| batching | clients | requests/s | p50 ms | p99 ms | rounds without failures | failed requests |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, rows in results.items():
        for r in rows:
            lines.append(f"| {mode} | {r['clients']} | {r['requests_per_s']:.2f} | {r['p50_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['rounds']} | {r['failed']} |")
    if "on" in results and "off" in results:
        lines += ["", "| clients | throughput on/off | p50 on/off |", "|---:|---:|---:|"]
        for on, off in zip(results["on"], results["off"], strict=True):
            lines.append(f"| {on['clients']} | {on['requests_per_s'] / off['requests_per_s']:.2f} | "
                         f"{on['p50_ms'] / off['p50_ms']:.2f} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="gpunet_0")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights")
    w.add_argument("--pretrained", action="store_true")
    w.add_argument("--random-weights", action="store_true", help="speed only: the labels are meaningless")
    p.add_argument("--img-size", type=int, help="input resolution (default: the model's)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--replicas", type=int, default=1)
    p.add_argument("--cpus-per-replica", type=float, default=1.0)
    p.add_argument("--max-batch-size", type=int, default=8, help="batching on (off is 1)")
    p.add_argument("--batch-wait-ms", type=float, default=5.0)
    p.add_argument("--modes", default="on,off", help="on, off or both")
    p.add_argument("--concurrency", default="1,8,32", type=lambda s: [int(v) for v in s.split(",")])
    p.add_argument("--requests", type=int, default=48, help="requests per level at least")
    p.add_argument("--per-client", type=int, default=3, help="and at least this many per client")
    p.add_argument("--warmup", type=int, default=8)
    p.add_argument("--image", default=str(ROOT / "examples" / "orange_ball.jpg"))
    p.add_argument("--rounds", type=int, default=1, help="measure every mode this many times, alternating; the "
                                                          "table shows the medians")
    p.add_argument("--url", help="measure this running server instead of starting one per mode")
    p.add_argument("--output", "-o", default="serve_load.json")
    return p.parse_args(argv)


def median_rows(rounds: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per concurrency level, the median over the rounds without failures of requests/s, p50 and p99
    (`rounds` says how many those were; `failed` adds up the failures of all)."""
    rows = []
    for level in zip(*rounds, strict=True):
        clean = [r for r in level if r["failed"] == 0] or list(level)
        rows.append({"clients": level[0]["clients"], "failed": sum(r["failed"] for r in level),
                     "rounds": sum(r["failed"] == 0 for r in level),
                     **{key: round(statistics.median(r[key] for r in clean), 2)
                        for key in ("requests_per_s", "p50_ms", "p99_ms")}})
    return rows


def run_rounds(a: argparse.Namespace, image: bytes, modes: list[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Each round measures every mode (on, off, on, off, ...): slow drifts of a shared machine hit both."""
    rounds: dict[str, list[list[dict[str, Any]]]] = {m: [] for m in modes}
    stops: dict[str, list[float]] = {m: [] for m in modes}
    for n in range(a.rounds):
        for mode in modes:
            print(f"round {n + 1}, batching {mode}:", flush=True)
            if a.url:
                rounds[mode].append(measure(a.url, image, a))
                continue
            log = Path(f"serve_load_{mode}.log")
            proc, url = start_server(a, a.max_batch_size if mode == "on" else 1, log)
            try:
                rounds[mode].append(measure(url, image, a))
            finally:
                stops[mode].append(round(stop_server(proc), 2))
    return rounds, stops


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    image = Path(a.image).read_bytes()
    modes = [m.strip() for m in a.modes.split(",") if m.strip()]
    load_before = os.getloadavg()
    rounds, stops = run_rounds(a, image, modes)
    results = {mode: median_rows(r) for mode, r in rounds.items()}
    report = {"model": a.model, "img_size": a.img_size, "device": a.device, "replicas": a.replicas,
              "cpus_per_replica": a.cpus_per_replica, "max_batch_size": a.max_batch_size,
              "batch_wait_ms": a.batch_wait_ms, "image": os.path.basename(a.image), "cpu_count": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "sigterm_to_exit_s": stops, "rounds": rounds, "median": results, "table": table(results)}
    atomic_write_bytes(a.output, (json.dumps(report, indent=2) + "\n").encode())
    print(f"median of {a.rounds} round(s):")
    print(report["table"])
    print(f"saved {a.output}")
    return 0 if all(r["rounds"] > 0 for rows in results.values() for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
