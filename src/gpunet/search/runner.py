"""The search: NSGA-II over the space, candidates trained as Ray tasks, state persisted per evaluation.

One search, in order:

1. the latency predictor: the layer table (loaded from disk when present), its correction
   fitted on whole-model measurements of a few random architectures, and its quality
   (Spearman rho, MAPE) on other held-out random architectures;
2. generations of NSGA-II: the driver proposes a generation (predicted latency over
   `budget * (1 + margin)` is pruned before any training), then each candidate is trained
   for `epochs_per_trial` epochs with `gpunet.train.train` on the user's ImageFolder
   dataset and scored on its validation split, as one Ray task per candidate (one CPU, or
   one GPU on CUDA; `gpunet.search.evaluate`); every finished candidate is appended to
   `candidates.jsonl` and `state.json` holds the generation, population, pending proposals
   and RNG state (`gpunet.search.state`), so a killed search resumes without repeating
   finished candidates;
3. the Pareto front (within the budget), every member's latency measured for real (the
   front is recomputed until all its members have real latencies), the released GPUNets
   measured on the same device for reference, and the outputs (`gpunet.search.outputs`).

Latency is only measured by the driver while no training task runs (before, between
generations, after), so measurements do not disturb each other or compete with training.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np

from gpunet._deprecation import moved
from gpunet.arch import read_json
from gpunet.errors import SearchError
from gpunet.search.config import SearchConfig, SearchResult
from gpunet.search.evaluate import start_ray
from gpunet.search.latency import LatencyContext, LatencyPredictor, LatencyTable, measure_model
from gpunet.search.optimizer import Point, pareto_front, propose, select_survivors
from gpunet.search.outputs import format_summary, plot_search, write_front, write_summary
from gpunet.search.space import SearchSpace, arch_key, get_space
from gpunet.search.state import STATE_VERSION, append_candidate, load_state, read_candidates, save_state

Records = dict[str, dict[str, Any]]  # finished candidates by key


def search(cfg: SearchConfig) -> SearchResult:
    """Run the search of `cfg` (resuming one found in `cfg.output`) and write its outputs there."""
    started = time.time()
    run = _Search(cfg)
    run.fit_predictor()
    records = run.generations()
    cands, front = run.confirm_front(records)
    refs = run.reference_latencies()
    return run.finish(cands, front, refs, time.time() - started)


def _num_classes(data: str, batch_size: int) -> int:
    """The class count of `data`, checked before any latency work: two classes, at least one training batch."""
    from gpunet.data import expand_inputs

    train_dir = os.path.join(data, "train")
    if not os.path.isdir(train_dir) or not os.path.isdir(os.path.join(data, "val")):
        raise SearchError(f"--data {data}: expected an ImageFolder dataset with train/ and val/ folders")
    classes = [d for d in os.listdir(train_dir) if os.path.isdir(os.path.join(train_dir, d))]
    if len(classes) < 2:
        raise SearchError(f"--data {data}: train/ needs at least two class folders")
    images = len(expand_inputs([train_dir])[0])
    if images < batch_size:
        raise SearchError(f"--data {data}: train/ has {images} images, fewer than one training batch "
                          f"(--train-batch-size {batch_size}); lower --train-batch-size or add images")
    return len(classes)


def _check_numbers(cfg: SearchConfig) -> None:
    if cfg.budget_ms <= 0 or cfg.trials < 1 or cfg.epochs_per_trial < 1 or cfg.population < 2 or cfg.workers < 1:
        raise SearchError("--budget-ms must be > 0, --trials, --epochs-per-trial, --workers >= 1, --population >= 2")


class _Search:
    """One search's data (space, state, latency predictor) and its phases, in the order `search` calls them."""

    def __init__(self, cfg: SearchConfig) -> None:
        _check_numbers(cfg)
        self.cfg = cfg
        get_space(cfg.space)  # an unknown space, then unfit data, are refused before anything is written
        self.num_classes = _num_classes(cfg.data, cfg.train_batch_size)
        self.out = os.path.abspath(cfg.output)
        os.makedirs(self.out, exist_ok=True)
        self.space = self._space()
        self.state_path = os.path.join(self.out, "state.json")
        self.cand_path = os.path.join(self.out, "candidates.jsonl")
        self.state = self._state()
        self.ctx = LatencyContext(cfg.device, cfg.backend, cfg.precision, cfg.batch_size, cfg.threads)
        self.table = LatencyTable(self.ctx, cfg.lut or os.path.join(self.out, "latency_lut.json"))
        self.predictor = LatencyPredictor(self.table)
        cfg.echo(f"search space {self.space.name!r} ({self.space.vector_length} genes), latency on "
                 f"{self.ctx.describe()}, budget {cfg.budget_ms:g} ms; {cfg.trials} trials x "
                 f"{cfg.epochs_per_trial} epochs on {cfg.data}")

    def _space(self) -> SearchSpace:
        """The configured space, saved as space.json; a folder holding another space's search is refused."""
        space = get_space(self.cfg.space)
        path = os.path.join(self.out, "space.json")
        if os.path.exists(path) and SearchSpace.load(path) != space:
            raise SearchError(f"{self.out} holds a search over another space (space.json); use a new -o folder")
        space.save(path)
        return space

    def _state(self) -> dict[str, Any]:
        """The state on disk (resumed) or a new one; a folder holding a search with other settings is refused."""
        state = load_state(self.state_path)
        if state:
            self.cfg.echo(f"resuming the search in {self.out} (generation {state.get('generation', 0)})")
        settings = self.cfg.settings()
        if state and state.get("settings") != settings:
            raise SearchError(f"{self.out} holds a search with other settings ({state.get('settings')}); use a new "
                              "-o folder")
        state.setdefault("version", STATE_VERSION)
        state["settings"] = settings
        return state

    def _save(self) -> None:
        save_state(self.state_path, self.state)

    # ------------------------------------------------------------------ 1. the latency predictor

    def fit_predictor(self) -> None:
        """Fit the correction on whole-model measurements and score it on held-out ones (once per search)."""
        cfg = self.cfg
        if "predictor" not in self.state:
            rng = np.random.default_rng([cfg.seed, 1])
            archs = [self.space.decode(self.space.sample(rng), self.num_classes)
                     for _ in range(cfg.calib_archs + cfg.holdout_archs)]
            t0 = time.time()
            measured = [measure_model(a, self.ctx) for a in archs]
            calib, hold = archs[: cfg.calib_archs], archs[cfg.calib_archs:]
            self.predictor.fit(calib, measured[: cfg.calib_archs])
            q = self.predictor.quality(hold, measured[cfg.calib_archs:])
            self.state["predictor"] = {"a": self.predictor.a, "b": self.predictor.b, "calib_n": len(calib),
                                       **q.to_dict(), "layers_measured": self.table.measurements,
                                       "seconds": round(time.time() - t0, 1)}
            self._save()
        p = self.state["predictor"]
        self.predictor.a, self.predictor.b = p["a"], p["b"]
        cfg.echo(f"latency predictor: {len(self.table.entries)} layer entries ({p['layers_measured']} measured "
                 f"now); correction {p['a']:.3f} * sum + {p['b']:.3f} ms; held-out n={p['n']}: "
                 f"Spearman rho {p['spearman']:.3f}, MAPE {p['mape']:.1f} %")

    # ------------------------------------------------------------------ 2. generations

    def generations(self) -> Records:
        """Propose, train and select generations until `trials` candidates are finished; -> all of them."""
        records = read_candidates(self.cand_path)
        if records:
            self.cfg.echo(f"{len(records)} finished candidate(s) on disk are not re-evaluated")
        rng = np.random.default_rng(self.cfg.seed)
        if "rng" in self.state:
            rng.bit_generator.state = self.state["rng"]
        for key, default in (("generation", 0), ("population", []), ("pending", [])):
            self.state.setdefault(key, default)
        ray: Any = None
        remote: Any = None
        try:
            while self.state["pending"] or len(records) < self.cfg.trials:
                if not self.state["pending"] and not self._propose(records, rng):
                    self.cfg.echo("no new candidate within the budget could be proposed; stopping early")
                    break
                todo = [c for c in self.state["pending"] if c["key"] not in records]
                if todo:
                    if ray is None:
                        ray, remote = start_ray(self.cfg)
                    self._evaluate(todo, records, ray, remote)
                self._select(records)
        finally:
            if ray is not None and ray.is_initialized():
                ray.shutdown()
        return records

    def _propose(self, records: Records, rng: np.random.Generator) -> bool:
        """The next generation's candidates as `pending` (saved with the RNG state); False if none could be found."""
        cfg, space = self.cfg, self.space
        limit = cfg.budget_ms * (1 + cfg.margin)

        def accept(v: np.ndarray) -> bool:
            arch = space.decode(v, self.num_classes)
            return arch_key(arch) not in records and self.predictor.predict(arch) <= limit

        n = min(cfg.population, cfg.trials - len(records))
        pop = [records[k] for k in self.state["population"] if k in records]
        vectors = propose(space, rng, n, parents=[np.array(r["vector"]) for r in pop],
                          parent_points=[Point(r["predicted_ms"], r["accuracy"], cfg.budget_ms) for r in pop],
                          accept=accept)
        if not vectors:
            return False
        pending = []
        for v in vectors:
            arch = space.decode(v, self.num_classes)
            pending.append({"key": arch_key(arch), "vector": [int(x) for x in v],
                            "predicted_ms": round(self.predictor.predict(arch), 5),
                            "lut_sum_ms": round(self.table.lookup(arch), 5)})
        self.state["pending"] = pending
        self.state["rng"] = rng.bit_generator.state
        self._save()
        return True

    def _evaluate(self, todo: list[dict[str, Any]], records: Records, ray: Any, remote: Any) -> None:
        """Train `todo` as Ray tasks; record each candidate (candidates.jsonl) as soon as it finishes."""
        cfg = self.cfg
        futures = {}
        for c in todo:
            arch = self.space.decode(c["vector"], self.num_classes)
            seed = cfg.seed + int(c["key"][:6], 16) % 10_000
            futures[remote.remote(arch.to_json(), c["key"], os.path.abspath(cfg.data), self.out,
                                  epochs=cfg.epochs_per_trial, batch_size=cfg.train_batch_size, seed=seed,
                                  device=cfg.device, train_opts=cfg.train_opts)] = c
        remaining = list(futures)
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            c = futures[ready[0]]
            res = ray.get(ready[0])
            arch = self.space.decode(c["vector"], self.num_classes)
            rec = {**c, **res, "generation": self.state["generation"], "trial": len(records), "arch": arch.to_json()}
            records[c["key"]] = rec
            append_candidate(self.cand_path, rec)
            cfg.echo(f"[{len(records):3d}/{cfg.trials}] {c['key']} gen {self.state['generation']}: "
                     f"top-1 {res['accuracy']:6.2f} %  predicted {c['predicted_ms']:.3f} ms  "
                     f"({res['train_seconds']:.0f} s)")

    def _select(self, records: Records) -> None:
        """NSGA-II survivors of parents + offspring become the population; the generation is done."""
        pool = list(dict.fromkeys(self.state["population"] + [c["key"] for c in self.state["pending"]]))
        pool = [k for k in pool if k in records]
        points = [Point(records[k]["predicted_ms"], records[k]["accuracy"], self.cfg.budget_ms) for k in pool]
        self.state["population"] = [pool[i] for i in sorted(select_survivors(points, self.cfg.population))]
        self.state["generation"] += 1
        self.state["pending"] = []
        self._save()

    # ------------------------------------------------------------------ 3. the front and the outputs

    def confirm_front(self, records: Records) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """(candidates by trial, the Pareto front within the budget with every member's latency measured for real)."""
        cands = sorted(records.values(), key=lambda r: r["trial"])
        real_ms: dict[str, float] = self.state.setdefault("measured", {})

        def latency(r: dict[str, Any]) -> float:  # measured if it was, else predicted
            return real_ms.get(r["key"], float(r["predicted_ms"]))

        while True:
            feasible = [r for r in cands if latency(r) <= self.cfg.budget_ms]
            pts = [Point(latency(r), r["accuracy"]) for r in feasible]
            front = [feasible[i] for i in pareto_front(pts)]
            todo = [r for r in front if r["key"] not in real_ms]
            if not todo:
                break
            for r in todo:
                real_ms[r["key"]] = round(measure_model(read_json(r["arch"]), self.ctx), 5)
            self._save()
        for r in cands:
            r["measured_ms"] = real_ms.get(r["key"])
        return cands, front

    def reference_latencies(self) -> dict[str, float]:
        """The released GPUNets of `reference_models`, measured in the same context (once per search)."""
        from gpunet.zoo import get_architecture, list_models

        wanted = self.cfg.reference_models
        names = [] if wanted in ("", "none") else (
            list_models() if wanted == "all" else [n.strip() for n in wanted.split(",")])
        refs: dict[str, float] = self.state.setdefault("references", {})
        for name in names:
            if name not in refs:
                self.cfg.echo(f"measuring the released {name} on {self.ctx.describe()} ...")
                refs[name] = round(measure_model(get_architecture(name), self.ctx), 4)
                self._save()
        return {n: refs[n] for n in names}

    def finish(self, cands: list[dict[str, Any]], front: list[dict[str, Any]], refs: dict[str, float],
               seconds: float) -> SearchResult:
        """Write front/, front.csv, summary.json/.md and search_plot.png; print the summary."""
        rows = write_front(self.out, front)
        summary = self._summary(cands, rows, refs, seconds)
        write_summary(self.out, summary)
        try:
            plot_search(cands, rows, refs, self.cfg.budget_ms, self.ctx.describe(),
                        os.path.join(self.out, "search_plot.png"))
        except ImportError:
            self.cfg.echo("matplotlib is not installed: no search_plot.png")
        self.cfg.echo(format_summary(summary))
        return SearchResult(self.out, cands, rows, summary)

    def _summary(self, cands: list[dict[str, Any]], rows: list[dict[str, Any]], refs: dict[str, float],
                 seconds: float) -> dict[str, Any]:
        cfg, p = self.cfg, self.state["predictor"]
        best = max(rows, key=lambda x: (x["accuracy"], -x["measured_ms"])) if rows else None
        return {
            "budget_ms": cfg.budget_ms, "latency_context": self.ctx.describe(), "device": cfg.device,
            "backend": cfg.backend, "precision": cfg.precision, "batch_size": cfg.batch_size,
            "space": self.space.name, "data": os.path.abspath(cfg.data),
            "trials_requested": cfg.trials, "trials_evaluated": len(cands), "epochs_per_trial": cfg.epochs_per_trial,
            "generations": self.state.get("generation"), "seed": cfg.seed,
            "predictor": {k: p[k] for k in ("a", "b", "calib_n", "n", "spearman", "mape")},
            # re-read: a shared --lut may have grown with other searches' entries meanwhile
            "layer_table_entries": len(LatencyTable(self.ctx, self.table.path).entries),
            "best": best, "front": rows, "references_ms": refs, "wall_seconds": round(seconds, 1),
        }


# the command line moved to gpunet.cli.search; the rest of this module's old names to their own modules
__getattr__ = moved(__name__, {
    "add_search_arguments": "gpunet.cli.search", "config_from_args": "gpunet.cli.search",
    "run_search": "gpunet.cli.search", "TRAIN_DEFAULTS": "gpunet.search.evaluate",
    "evaluate_candidate": "gpunet.search.evaluate", "FRONT_COLUMNS": "gpunet.search.outputs",
})
