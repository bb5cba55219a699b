"""`gpunet search`: NSGA-II over the space, candidates trained as Ray tasks, state persisted per evaluation.

One search, in order:

1. the latency predictor: the layer table (loaded from disk when present), its correction
   fitted on whole-model measurements of a few random architectures, and its quality
   (Spearman rho, MAPE) on other held-out random architectures;
2. generations of NSGA-II: the driver proposes a generation (predicted latency over
   `budget * (1 + margin)` is pruned before any training), then each candidate is trained
   for `--epochs-per-trial` epochs with `gpunet.train.train` on the user's ImageFolder
   dataset and scored on its validation split, as one Ray task per candidate (one CPU, or
   one GPU on `--device cuda`); every finished candidate is appended to `candidates.jsonl`
   (flushed and fsynced) and `state.json` holds the generation, population, pending
   proposals and RNG state, so a killed search resumes without repeating finished candidates;
3. the Pareto front (within the budget), every member's latency measured for real (the
   front is recomputed until all its members have real latencies), the released GPUNets
   measured on the same device for reference, and the outputs.

Latency is only measured by the driver while no training task runs (before, between
generations, after), so measurements do not disturb each other or compete with training.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np

from gpunet.arch import read_json
from gpunet.search.latency import BACKENDS, LatencyContext, LatencyPredictor, LatencyTable, measure_model
from gpunet.search.optimizer import Point, pareto_front, propose, select_survivors
from gpunet.search.space import PRESETS, SearchSpace, arch_key, get_space

STATE_VERSION = 1
# short-budget training defaults (each overridable with --train-opt KEY=VALUE)
TRAIN_DEFAULTS: dict[str, Any] = {
    "opt": "adamw", "lr": 2e-3, "weight_decay": 0.05, "sched": "cosine", "warmup_epochs": 0, "min_lr": 1e-5,
    "drop_path": 0.0, "hflip": 0.0, "color_jitter": 0.0, "scale": [0.7, 1.0], "smoothing": 0.1,
}


class SearchError(RuntimeError):
    """A setup problem (data, output folder, options), reported as one message."""


# ---------------------------------------------------------------------------- candidate evaluation (a Ray task)

def evaluate_candidate(arch_json: list[dict[str, Any]], key: str, data_dir: str, out_dir: str, *, epochs: int,
                       batch_size: int, seed: int, device: str, train_opts: dict[str, Any]) -> dict[str, Any]:
    """Train one candidate for `epochs` on `data_dir`/train and score it on `data_dir`/val (top-1 %)."""
    import torch

    from gpunet.train import train

    if device == "cpu":
        torch.set_num_threads(1)
    trial_dir = os.path.join(out_dir, "trials", key)
    shutil.rmtree(trial_dir, ignore_errors=True)  # a run killed mid-way restarts from scratch
    os.makedirs(trial_dir, exist_ok=True)
    with open(os.path.join(out_dir, "trials.log"), "a", encoding="utf-8") as f:
        f.write(f"start {key} pid={os.getpid()}\n")
    path = os.path.join(trial_dir, "arch.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(arch_json, f, indent=1)
    opts = {**TRAIN_DEFAULTS, **train_opts}
    started = time.time()
    result = train(data_dir, model=path, epochs=epochs, batch_size=batch_size, img_size=arch_json[0]["img_resolution"],
                   output=os.path.join(out_dir, "trials"), experiment=key, seed=seed, workers=0, device=device,
                   log_interval=1_000_000, **opts)
    last = result.last
    return {"accuracy": float(last.get("eval_top1", 0.0)), "top5": float(last.get("eval_top5", 0.0)),
            "val_loss": float(last.get("eval_loss", float("nan"))), "train_seconds": round(time.time() - started, 2),
            "epochs": result.epochs_run}


# ---------------------------------------------------------------------------- persistence

def _append_jsonl(path: str, record: dict[str, Any]) -> None:
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a", encoding="utf-8") as f:
        f.write(line)
        f.flush()
        os.fsync(f.fileno())


def read_candidates(path: str) -> dict[str, dict[str, Any]]:
    """Finished candidates by key (a torn last line from a kill is ignored)."""
    out: dict[str, dict[str, Any]] = {}
    if not os.path.exists(path):
        return out
    with open(path, encoding="utf-8") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            out[rec["key"]] = rec
    return out


def _save_state(path: str, state: dict[str, Any]) -> None:
    from gpunet._io import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())


# ---------------------------------------------------------------------------- configuration

@dataclass
class SearchConfig:
    data: str
    output: str
    budget_ms: float
    trials: int = 16
    epochs_per_trial: int = 2
    device: str = "cpu"
    backend: str = "eager"
    precision: str = "fp32"
    batch_size: int = 1
    train_batch_size: int = 64
    space: str = "nvidia"
    population: int = 8
    margin: float = 0.1
    seed: int = 0
    workers: int = 2
    address: str | None = None
    lut: str | None = None
    threads: int = 1
    calib_archs: int = 8
    holdout_archs: int = 8
    reference_models: str = "all"
    train_opts: dict[str, Any] = field(default_factory=dict)
    log: Any = None

    def echo(self, msg: str) -> None:
        print(msg, file=self.log or sys.stdout, flush=True)


@dataclass
class SearchResult:
    output: str
    candidates: list[dict[str, Any]]
    front: list[dict[str, Any]]
    summary: dict[str, Any]


def _num_classes(data: str) -> int:
    train_dir = os.path.join(data, "train")
    if not os.path.isdir(train_dir) or not os.path.isdir(os.path.join(data, "val")):
        raise SearchError(f"--data {data}: expected an ImageFolder dataset with train/ and val/ folders")
    classes = [d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d))]
    if len(classes) < 2:
        raise SearchError(f"--data {data}: train/ needs at least two class folders")
    return len(classes)


# ---------------------------------------------------------------------------- the search

def search(cfg: SearchConfig) -> SearchResult:  # noqa: C901 - one linear procedure
    started = time.time()
    if cfg.budget_ms <= 0 or cfg.trials < 1 or cfg.epochs_per_trial < 1 or cfg.population < 2 or cfg.workers < 1:
        raise SearchError("--budget-ms must be > 0, --trials, --epochs-per-trial, --workers >= 1, --population >= 2")
    num_classes = _num_classes(cfg.data)
    out = os.path.abspath(cfg.output)
    os.makedirs(out, exist_ok=True)
    space = get_space(cfg.space)
    space_path = os.path.join(out, "space.json")
    if os.path.exists(space_path) and SearchSpace.load(space_path) != space:
        raise SearchError(f"{out} holds a search over another space (space.json); use a new -o folder")
    space.save(space_path)
    state_path = os.path.join(out, "state.json")
    cand_path = os.path.join(out, "candidates.jsonl")
    state: dict[str, Any] = {}
    if os.path.exists(state_path):
        with open(state_path, encoding="utf-8") as f:
            state = json.load(f)
        cfg.echo(f"resuming the search in {out} (generation {state.get('generation', 0)})")
    settings = {"budget_ms": cfg.budget_ms, "device": cfg.device, "backend": cfg.backend,
                "precision": cfg.precision, "batch_size": cfg.batch_size, "seed": cfg.seed,
                "epochs_per_trial": cfg.epochs_per_trial, "population": cfg.population, "threads": cfg.threads}
    if state and state.get("settings") != settings:
        raise SearchError(f"{out} holds a search with other settings ({state.get('settings')}); use a new -o folder")
    state.setdefault("version", STATE_VERSION)
    state["settings"] = settings
    ctx = LatencyContext(cfg.device, cfg.backend, cfg.precision, cfg.batch_size, cfg.threads)
    table = LatencyTable(ctx, cfg.lut or os.path.join(out, "latency_lut.json"))
    predictor = LatencyPredictor(table)
    cfg.echo(f"search space {space.name!r} ({space.vector_length} genes), latency on {ctx.describe()}, "
             f"budget {cfg.budget_ms:g} ms; {cfg.trials} trials x {cfg.epochs_per_trial} epochs on {cfg.data}")

    # 1. predictor: correction fit + quality on held-out random architectures
    if "predictor" not in state:
        rng_cal = np.random.default_rng([cfg.seed, 1])
        archs = [space.decode(space.sample(rng_cal), num_classes) for _ in range(cfg.calib_archs + cfg.holdout_archs)]
        t0 = time.time()
        measured = [measure_model(a, ctx) for a in archs]
        calib, hold = archs[: cfg.calib_archs], archs[cfg.calib_archs:]
        predictor.fit(calib, measured[: cfg.calib_archs])
        q = predictor.quality(hold, measured[cfg.calib_archs:])
        state["predictor"] = {"a": predictor.a, "b": predictor.b, "calib_n": len(calib), **q.to_dict(),
                              "layers_measured": table.measurements, "seconds": round(time.time() - t0, 1)}
        _save_state(state_path, state)
    p = state["predictor"]
    predictor.a, predictor.b = p["a"], p["b"]
    cfg.echo(f"latency predictor: {len(table.entries)} layer entries ({p['layers_measured']} measured now); "
             f"correction {p['a']:.3f} * sum + {p['b']:.3f} ms; held-out n={p['n']}: "
             f"Spearman rho {p['spearman']:.3f}, MAPE {p['mape']:.1f} %")

    # 2. generations
    records = read_candidates(cand_path)
    if records:
        cfg.echo(f"{len(records)} finished candidate(s) on disk are not re-evaluated")
    rng = np.random.default_rng(cfg.seed)
    if "rng" in state:
        rng.bit_generator.state = state["rng"]
    state.setdefault("generation", 0)
    state.setdefault("population", [])
    state.setdefault("pending", [])
    limit = cfg.budget_ms * (1 + cfg.margin)

    def predicted(v: np.ndarray) -> float:
        return predictor.predict(space.decode(v, num_classes))

    def accept(v: np.ndarray) -> bool:
        key = arch_key(space.decode(v, num_classes))
        return key not in records and predicted(v) <= limit

    ray = None
    remote = None
    try:
        while True:
            n_done = len(records)
            if not state["pending"]:
                if n_done >= cfg.trials:
                    break
                n = min(cfg.population, cfg.trials - n_done)
                pop = [records[k] for k in state["population"] if k in records]
                vectors = propose(space, rng, n, parents=[np.array(r["vector"]) for r in pop],
                                  parent_points=[Point(r["predicted_ms"], r["accuracy"], cfg.budget_ms) for r in pop],
                                  accept=accept)
                if not vectors:
                    cfg.echo("no new candidate within the budget could be proposed; stopping early")
                    break
                state["pending"] = []
                for v in vectors:
                    arch = space.decode(v, num_classes)
                    state["pending"].append({"key": arch_key(arch), "vector": [int(x) for x in v],
                                             "predicted_ms": round(predictor.predict(arch), 5),
                                             "lut_sum_ms": round(table.lookup(arch), 5)})
                state["rng"] = rng.bit_generator.state
                _save_state(state_path, state)
            todo = [c for c in state["pending"] if c["key"] not in records]
            if todo:
                if ray is None:
                    ray, remote = _start_ray(cfg)
                assert remote is not None
                futures = {}
                for c in todo:
                    arch = space.decode(c["vector"], num_classes)
                    seed = cfg.seed + int(c["key"][:6], 16) % 10_000
                    futures[remote.remote(arch.to_json(), c["key"], os.path.abspath(cfg.data), out,
                                          epochs=cfg.epochs_per_trial, batch_size=cfg.train_batch_size, seed=seed,
                                          device=cfg.device, train_opts=cfg.train_opts)] = c
                remaining = list(futures)
                while remaining:
                    ready, remaining = ray.wait(remaining, num_returns=1)
                    c = futures[ready[0]]
                    res = ray.get(ready[0])
                    arch = space.decode(c["vector"], num_classes)
                    rec = {**c, **res, "generation": state["generation"], "trial": len(records),
                           "arch": arch.to_json()}
                    records[c["key"]] = rec
                    _append_jsonl(cand_path, rec)
                    cfg.echo(f"[{len(records):3d}/{cfg.trials}] {c['key']} gen {state['generation']}: "
                             f"top-1 {res['accuracy']:6.2f} %  predicted {c['predicted_ms']:.3f} ms  "
                             f"({res['train_seconds']:.0f} s)")
            # selection: parents + offspring -> population
            pool = list(dict.fromkeys(state["population"] + [c["key"] for c in state["pending"]]))
            pool = [k for k in pool if k in records]
            points = [Point(records[k]["predicted_ms"], records[k]["accuracy"], cfg.budget_ms) for k in pool]
            state["population"] = [pool[i] for i in sorted(select_survivors(points, cfg.population))]
            state["generation"] += 1
            state["pending"] = []
            _save_state(state_path, state)
    finally:
        if ray is not None and ray.is_initialized():
            ray.shutdown()

    # 3. the front, confirmed with real measurements
    cands = sorted(records.values(), key=lambda r: r["trial"])
    real_ms: dict[str, float] = state.setdefault("measured", {})
    while True:
        feasible = [r for r in cands if real_ms.get(r["key"], r["predicted_ms"]) <= cfg.budget_ms]
        pts = [Point(real_ms.get(r["key"], r["predicted_ms"]), r["accuracy"]) for r in feasible]
        front = [feasible[i] for i in pareto_front(pts)]
        todo_m = [r for r in front if r["key"] not in real_ms]
        if not todo_m:
            break
        for r in todo_m:
            real_ms[r["key"]] = round(measure_model(read_json(r["arch"]), ctx), 5)
        _save_state(state_path, state)
    for r in cands:
        r["measured_ms"] = real_ms.get(r["key"])
    refs = _reference_latencies(cfg, ctx, state, state_path)
    result = _write_outputs(cfg, out, space, ctx, cands, front, state, refs, time.time() - started)
    return result


def _start_ray(cfg: SearchConfig) -> tuple[Any, Any]:
    try:
        import ray
    except ImportError:
        raise SearchError("gpunet search needs Ray: pip install 'gpunet[search]'") from None
    kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": False,
                              "configure_logging": False}
    if cfg.address:
        ray.init(address=cfg.address, **kwargs)
    else:
        import torch

        gpus = torch.cuda.device_count() if cfg.device.startswith("cuda") else 0
        ray.init(address="local", num_cpus=cfg.workers, num_gpus=gpus, **kwargs)
    gpu = 1 if cfg.device.startswith("cuda") else 0
    remote = ray.remote(num_cpus=1, num_gpus=gpu, max_retries=1)(cast(Any, evaluate_candidate))
    return ray, remote


def _reference_latencies(cfg: SearchConfig, ctx: LatencyContext, state: dict[str, Any],
                         state_path: str) -> dict[str, float]:
    from gpunet.zoo import get_architecture, list_models

    names = [] if cfg.reference_models in ("", "none") else (
        list_models() if cfg.reference_models == "all" else [n.strip() for n in cfg.reference_models.split(",")])
    refs: dict[str, float] = state.setdefault("references", {})
    for name in names:
        if name not in refs:
            cfg.echo(f"measuring the released {name} on {ctx.describe()} ...")
            refs[name] = round(measure_model(get_architecture(name), ctx), 4)
            _save_state(state_path, state)
    return {n: refs[n] for n in names}


# ---------------------------------------------------------------------------- outputs

FRONT_COLUMNS = ("rank", "key", "accuracy", "top5", "measured_ms", "predicted_ms", "img_resolution", "params",
                 "layers", "trial", "json")


def _write_outputs(cfg: SearchConfig, out: str, space: SearchSpace, ctx: LatencyContext,
                   cands: list[dict[str, Any]], front: list[dict[str, Any]], state: dict[str, Any],
                   refs: dict[str, float], seconds: float) -> SearchResult:
    from gpunet._io import atomic_write_bytes
    from gpunet.model import GPUNet

    front_dir = os.path.join(out, "front")
    shutil.rmtree(front_dir, ignore_errors=True)
    os.makedirs(front_dir)
    rows = []
    for rank, r in enumerate(front):
        arch = read_json(r["arch"])
        name = f"{rank:02d}_{r['key']}.json"
        arch.save(os.path.join(front_dir, name))
        params = sum(p.numel() for p in GPUNet(arch).parameters())
        rows.append({"rank": rank, "key": r["key"], "accuracy": r["accuracy"], "top5": r.get("top5"),
                     "measured_ms": r["measured_ms"], "predicted_ms": r["predicted_ms"],
                     "img_resolution": arch.img_resolution, "params": params, "layers": len(arch.layers),
                     "trial": r["trial"], "json": os.path.join("front", name)})
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=FRONT_COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(os.path.join(out, "front.csv"), buf.getvalue().encode())
    best = max(rows, key=lambda x: (x["accuracy"], -x["measured_ms"])) if rows else None
    p = state["predictor"]
    summary = {
        "budget_ms": cfg.budget_ms, "latency_context": ctx.describe(), "device": cfg.device, "backend": cfg.backend,
        "precision": cfg.precision, "batch_size": cfg.batch_size, "space": space.name,
        "data": os.path.abspath(cfg.data),
        "trials_requested": cfg.trials, "trials_evaluated": len(cands), "epochs_per_trial": cfg.epochs_per_trial,
        "generations": state.get("generation"), "seed": cfg.seed,
        "predictor": {k: p[k] for k in ("a", "b", "calib_n", "n", "spearman", "mape")},
        "layer_table_entries": len(LatencyTable(ctx, cfg.lut or os.path.join(out, "latency_lut.json")).entries),
        "best": best, "front": rows, "references_ms": refs, "wall_seconds": round(seconds, 1),
    }
    atomic_write_bytes(os.path.join(out, "summary.json"), (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(os.path.join(out, "summary.md"), format_summary(summary).encode())
    plot_path = os.path.join(out, "search_plot.png")
    try:
        plot_search(cands, rows, refs, cfg.budget_ms, ctx.describe(), plot_path)
    except ImportError:
        cfg.echo("matplotlib is not installed: no search_plot.png")
    cfg.echo(format_summary(summary))
    return SearchResult(out, cands, rows, summary)


def format_summary(s: dict[str, Any]) -> str:
    p = s["predictor"]
    lines = [
        "# GPUNet architecture search", "",
        f"- latency: {s['latency_context']}; budget {s['budget_ms']:g} ms",
        f"- space: {s['space']}; {s['trials_evaluated']} candidates trained ({s['epochs_per_trial']} epoch(s) each, "
        f"{s['generations']} generation(s), seed {s['seed']}) on {s['data']}",
        f"- latency predictor (layer table, {s['layer_table_entries']} entries, corrected "
        f"{p['a']:.3f} * sum + {p['b']:.3f} ms on {p['calib_n']} models): held-out n={p['n']}, "
        f"Spearman rho {p['spearman']:.3f}, MAPE {p['mape']:.1f} %",
        f"- wall time: {s['wall_seconds'] / 60:.1f} min", "",
        "| rank | key | val top-1 % | measured ms | predicted ms | res | params | JSON |",
        "|---:|---|---:|---:|---:|---:|---:|---|",
    ]
    for r in s["front"]:
        lines.append(f"| {r['rank']} | {r['key']} | {r['accuracy']:.2f} | {r['measured_ms']:.3f} | "
                     f"{r['predicted_ms']:.3f} | {r['img_resolution']} | {r['params']:,} | {r['json']} |")
    if not s["front"]:
        lines.append("| - | no candidate within the budget | | | | | | |")
    if s["references_ms"]:
        lines += ["", "Released GPUNets measured in the same setting (ms): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in s["references_ms"].items())]
    return "\n".join(lines) + "\n"


def plot_search(cands: list[dict[str, Any]], front: list[dict[str, Any]], refs: dict[str, float], budget_ms: float,
                title: str, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ax.scatter([c["measured_ms"] or c["predicted_ms"] for c in cands], [c["accuracy"] for c in cands], s=18,
               color="tab:gray", alpha=0.6, label="candidates (latency: measured if on the front, else predicted)")
    if front:
        ax.plot([r["measured_ms"] for r in front], [r["accuracy"] for r in front], "o-", color="tab:green",
                label="Pareto front (measured latency)")
    ax.axvline(budget_ms, color="tab:red", ls="--", lw=1.2, label=f"budget {budget_ms:g} ms")
    for name, ms in refs.items():
        ax.axvline(ms, color="tab:blue", ls=":", lw=1)
        ax.annotate(f"{name} {ms:.3g} ms", (ms, 0.98), xycoords=("data", "axes fraction"), rotation=90,
                    fontsize=7, color="tab:blue", ha="right", va="top")
    xs = [c["measured_ms"] or c["predicted_ms"] for c in cands] + list(refs.values()) + [budget_ms]
    if xs and max(xs) / max(min(xs), 1e-9) > 20:
        ax.set_xscale("log")
    ax.set_xlabel("latency (ms)  —  dotted: released GPUNets measured here")
    ax.set_ylabel("validation top-1 (%) after the short training budget")
    ax.set_title(f"gpunet search: {title}", fontsize=9)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- CLI

def _train_opt(text: str) -> tuple[str, Any]:
    import yaml

    if "=" not in text:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    k, v = text.split("=", 1)
    return k.strip().replace("-", "_"), yaml.safe_load(v)


def add_search_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("--data", required=True, metavar="DIR", help="ImageFolder dataset with train/ and val/")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output folder (resumes a search found there)")
    p.add_argument("--budget-ms", type=float, required=True, help="latency budget in milliseconds")
    p.add_argument("--device", default="cpu", help="cpu or cuda (latency and training)")
    p.add_argument("--backend", choices=BACKENDS, default="eager", help="latency backend (default eager)")
    p.add_argument("--precision", choices=("fp32", "fp16", "bf16"), default="fp32")
    p.add_argument("--batch-size", type=int, default=1, help="batch size the latency is measured at (default 1)")
    p.add_argument("--threads", type=int, default=1, help="CPU threads for latency measurements (default 1)")
    p.add_argument("--trials", type=int, default=16, help="candidates to train (default 16)")
    p.add_argument("--epochs-per-trial", type=int, default=2, help="training epochs per candidate (default 2)")
    p.add_argument("--train-batch-size", type=int, default=64, help="training batch size (default 64)")
    p.add_argument("--train-opt", type=_train_opt, action="append", default=[], metavar="KEY=VALUE",
                   help="a `gpunet train` setting for every candidate, e.g. lr=0.001 (repeatable)")
    p.add_argument("--space", default="nvidia",
                   help=f"search space: a preset ({', '.join(PRESETS)}) or a space JSON/YAML file (default nvidia)")
    p.add_argument("--population", type=int, default=8, help="NSGA-II population / generation size (default 8)")
    p.add_argument("--margin", type=float, default=0.1,
                   help="prune candidates predicted over budget * (1 + margin) before training (default 0.1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=2, help="Ray CPUs of the local instance = parallel trials")
    p.add_argument("--address", help="join this Ray cluster instead of starting a local instance")
    p.add_argument("--lut", metavar="PATH", help="layer latency table to use and extend (default OUT/latency_lut.json)")
    p.add_argument("--calib-archs", type=int, default=8, help="whole models the predictor correction is fitted on")
    p.add_argument("--holdout-archs", type=int, default=8, help="held-out models the predictor is scored on")
    p.add_argument("--reference-models", default="all",
                   help="released GPUNets to measure for the plot: all, none, or a comma list")
    return p


def config_from_args(args: argparse.Namespace) -> SearchConfig:
    return SearchConfig(data=args.data, output=args.output, budget_ms=args.budget_ms, trials=args.trials,
                        epochs_per_trial=args.epochs_per_trial, device=args.device, backend=args.backend,
                        precision=args.precision, batch_size=args.batch_size, train_batch_size=args.train_batch_size,
                        space=args.space, population=args.population, margin=args.margin, seed=args.seed,
                        workers=args.workers, address=args.address, lut=args.lut, threads=args.threads,
                        calib_archs=args.calib_archs, holdout_archs=args.holdout_archs,
                        reference_models=args.reference_models, train_opts=dict(args.train_opt))


def run_search(args: argparse.Namespace) -> int:
    from gpunet.search.latency import LatencyError
    from gpunet.search.space import SearchSpaceError

    try:
        search(config_from_args(args))
    except (SearchError, SearchSpaceError, LatencyError) as exc:
        print(f"gpunet: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="gpunet search", description=__doc__.split("\n\n")[0])
    add_search_arguments(parser)
    return run_search(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
