"""The search space: NVIDIA's published GPUNet table as a typed, editable, saveable value.

A `SearchSpace` is a head (filters, activations), stages 1..7 (`StageSpace`: block type,
stride, kernels, layer counts, activations, expansions, filters, SE), input resolutions and
the tail width. A point of the space is a fixed-length integer vector (`encode` / `decode`):

    [head filters, head act, (layers, kernel, act, expansion, filters, se) per stage, resolution]

each entry an index into that field's choices. `decode` turns a vector into a validated
NVIDIA-format `Architecture` (layers of a stage share their settings; only a stage's first
block has the stage's stride; stages with 0 layers are omitted), and `encode(decode(v))`
is `v` with the genes of empty stages (and single-choice genes) set to 0, so
`decode(encode(a)) == a` for every architecture of the space.

The head's kernel size is not searched: NVIDIA's table lists kernel 3 or 5 for the stem,
but NVIDIA's JSON format has no kernel field for `head` and NVIDIA's builder always uses
3x3, so a 5x5 stem could not be written as a JSON that `create_model` (or NVIDIA's code)
builds the same way. The head's filters and activation are searched.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from gpunet.arch import ACTIVATIONS, Architecture, ConvSpec, FusedIRBSpec, HeadSpec, IRBSpec, LayerSpec, TailSpec
from gpunet.errors import SearchSpaceError

Vector = Sequence[int] | np.ndarray
BLOCK_TYPES = ("conv", "fused_irb", "irb")
GENES_PER_STAGE = 6  # layers, kernel, act, expansion, filters, se
STAGE_GENES = ("layers", "kernel", "act", "expansion", "filters", "se")



def _range(lo: int, hi: int, step: int) -> tuple[int, ...]:
    return tuple(range(lo, hi + 1, step))


@dataclass(frozen=True)
class StageSpace:
    """One stage of the table: every layer of the stage shares these (chosen) settings."""

    stage: int
    block: str
    stride: int
    kernels: tuple[int, ...]
    layers: tuple[int, ...]
    acts: tuple[str, ...]
    filters: tuple[int, ...]
    expansions: tuple[int | float, ...] = (1,)
    se: tuple[bool, ...] = (False,)

    def choices(self) -> tuple[tuple[Any, ...], ...]:
        return (self.layers, self.kernels, self.acts, self.expansions, self.filters, self.se)


@dataclass(frozen=True)
class SearchSpace:
    """The whole space. `distill=True` searches NVIDIA's distilled family (ReLU, no SE, no conv)."""

    stages: tuple[StageSpace, ...]
    head_filters: tuple[int, ...] = (24, 32)
    head_acts: tuple[str, ...] = ("relu", "swish")
    resolutions: tuple[int, ...] = _range(224, 512, 32)
    tail_width: int = 1792
    distill: bool = False
    name: str = "custom"
    in_channels: int = 3

    def __post_init__(self) -> None:
        self.validate()

    # ------------------------------------------------------------------ validation

    def validate(self) -> None:
        def bad(where: str, msg: str) -> SearchSpaceError:
            return SearchSpaceError(f"search space {self.name!r}: {where}: {msg}")

        def check_choices(where: str, values: Sequence[Any], ok: Any, expected: str) -> None:
            if not values:
                raise bad(where, "needs at least one choice")
            if len(set(values)) != len(values):
                raise bad(where, f"duplicate choices in {list(values)}")
            for v in values:
                if not ok(v):
                    raise bad(where, f"expected {expected}, got {v!r}")

        def pos_int(v: Any) -> bool:
            return isinstance(v, int) and not isinstance(v, bool) and v > 0

        if not self.stages:
            raise bad("stages", "needs at least one stage")
        check_choices("head_filters", self.head_filters, pos_int, "positive integers")
        check_choices("head_acts", self.head_acts, lambda v: v in ACTIVATIONS, f"one of {ACTIVATIONS}")
        check_choices("resolutions", self.resolutions, pos_int, "positive integers")
        if not pos_int(self.tail_width):
            raise bad("tail_width", f"expected a positive integer, got {self.tail_width!r}")
        if self.distill and set(self.head_acts) != {"relu"}:
            raise bad("head_acts", "the distilled family uses ReLU only")
        seen: set[int] = set()
        for s in self.stages:
            w = f"stage {s.stage}"
            if not pos_int(s.stage) or s.stage in seen:
                raise bad(w, "stage numbers must be distinct positive integers")
            if seen and s.stage < max(seen):
                raise bad(w, "stages must be listed in increasing order")
            seen.add(s.stage)
            if s.block not in BLOCK_TYPES:
                raise bad(f"{w} block", f"expected one of {BLOCK_TYPES}, got {s.block!r}")
            if s.stride not in (1, 2):
                raise bad(f"{w} stride", f"expected 1 or 2, got {s.stride!r}")
            check_choices(f"{w} kernels", s.kernels, lambda v: pos_int(v) and v % 2 == 1, "odd positive integers")
            check_choices(f"{w} layers", s.layers, lambda v: isinstance(v, int) and v >= 0, "integers >= 0")
            check_choices(f"{w} acts", s.acts, lambda v: v in ACTIVATIONS, f"one of {ACTIVATIONS}")
            check_choices(f"{w} filters", s.filters, pos_int, "positive integers")
            check_choices(f"{w} expansions", s.expansions,
                          lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0,
                          "positive numbers")
            check_choices(f"{w} se", s.se, lambda v: isinstance(v, bool), "true/false")
            if s.block == "conv" and (len(s.expansions) > 1 or len(s.se) > 1 or True in s.se):
                raise bad(w, "a 'conv' stage has no expansion or SE choices (use expansions [1], se [false])")
            if self.distill:
                if s.block == "conv":
                    raise bad(f"{w} block", "the distilled family has no 'conv' layers")
                if set(s.acts) != {"relu"} or True in s.se:
                    raise bad(w, "the distilled family uses ReLU only and no SE")

    # ------------------------------------------------------------------ encoding

    @property
    def vector_length(self) -> int:
        return 2 + GENES_PER_STAGE * len(self.stages) + 1

    def gene_sizes(self) -> np.ndarray:
        """Number of choices of every gene (the vector's upper bounds, exclusive)."""
        sizes = [len(self.head_filters), len(self.head_acts)]
        for s in self.stages:
            sizes += [len(c) for c in s.choices()]
        sizes.append(len(self.resolutions))
        return np.array(sizes, dtype=np.int64)

    def gene_names(self) -> list[str]:
        names = ["head.filters", "head.act"]
        for s in self.stages:
            names += [f"stage{s.stage}.{g}" for g in STAGE_GENES]
        return names + ["resolution"]

    def canonical(self, vector: Vector) -> np.ndarray:
        """The vector with irrelevant genes (those of empty stages) zeroed: one vector per architecture."""
        v = np.asarray(vector, dtype=np.int64).copy()
        self._check_vector(v)
        for i, s in enumerate(self.stages):
            base = 2 + GENES_PER_STAGE * i
            if s.layers[v[base]] == 0:
                v[base + 1: base + GENES_PER_STAGE] = 0
        return v

    def _check_vector(self, v: np.ndarray) -> None:
        sizes = self.gene_sizes()
        if v.shape != sizes.shape:
            raise SearchSpaceError(f"expected a vector of length {len(sizes)}, got shape {tuple(v.shape)}")
        bad = np.flatnonzero((v < 0) | (v >= sizes))
        if bad.size:
            i = int(bad[0])
            raise SearchSpaceError(f"gene {self.gene_names()[i]} = {int(v[i])} is out of range 0..{int(sizes[i]) - 1}")

    def decode(self, vector: Vector, num_classes: int = 1000) -> Architecture:
        """Vector -> validated NVIDIA-format architecture."""
        v = self.canonical(vector)
        res = self.resolutions[v[-1]]
        head_c = self.head_filters[v[0]]
        layers: list[LayerSpec] = [HeadSpec(self.in_channels, head_c, act=self.head_acts[v[1]])]
        c = head_c
        for i, s in enumerate(self.stages):
            g = v[2 + GENES_PER_STAGE * i: 2 + GENES_PER_STAGE * (i + 1)]
            n, k, act = s.layers[g[0]], s.kernels[g[1]], s.acts[g[2]]
            e, out, se = s.expansions[g[3]], s.filters[g[4]], s.se[g[5]]
            for j in range(n):
                stride = s.stride if j == 0 else 1
                layer: LayerSpec
                if s.block == "conv":
                    layer = ConvSpec(c, out, stride, k, act, s.stage)
                elif self.distill:
                    cls = IRBSpec if s.block == "irb" else FusedIRBSpec
                    layer = cls(c, out, stride, e, k, s.stage, groups=1)
                else:
                    cls = IRBSpec if s.block == "irb" else FusedIRBSpec
                    layer = cls(c, out, stride, e, k, s.stage, act=act, use_se=se)
                layers.append(layer)
                c = out
        layers.append(TailSpec(c, self.tail_width, num_classes))
        return Architecture(res, self.distill, tuple(layers))

    def encode(self, arch: Architecture) -> np.ndarray:
        """Architecture of this space -> its canonical vector (SearchSpaceError if it is not in the space)."""
        def index(values: Sequence[Any], value: Any, what: str) -> int:
            for i, x in enumerate(values):
                if x == value and isinstance(x, bool) == isinstance(value, bool):
                    return i
            raise SearchSpaceError(f"{what} = {value!r} is not a choice of the space ({list(values)})")

        if arch.distill != self.distill:
            raise SearchSpaceError(f"distill={arch.distill} but the space has distill={self.distill}")
        head = arch.head
        v = [index(self.head_filters, head.out_channels, "head filters"),
             index(self.head_acts, head.act if not self.distill else "relu", "head act")]
        blocks = list(arch.blocks)
        pos = 0
        for s in self.stages:
            run: list[Any] = []
            while pos < len(blocks) and blocks[pos].stage == s.stage:
                run.append(blocks[pos])
                pos += 1
            if not run:
                v += [index(s.layers, 0, f"stage {s.stage} layers"), 0, 0, 0, 0, 0]
                continue
            first = run[0]
            w = f"stage {s.stage}"
            for j, b in enumerate(run):
                if b.layer_type != s.block:
                    raise SearchSpaceError(f"{w}: layer type {b.layer_type!r}, the space has {s.block!r}")
                if b.stride != (s.stride if j == 0 else 1):
                    raise SearchSpaceError(f"{w}: layer {j} has stride {b.stride}")
                same = (b.kernel_size, getattr(b, "act", None), getattr(b, "expansion", None),
                        b.out_channels, getattr(b, "use_se", None))
                ref = (first.kernel_size, getattr(first, "act", None), getattr(first, "expansion", None),
                       first.out_channels, getattr(first, "use_se", None))
                if same != ref:
                    raise SearchSpaceError(f"{w}: layers of a stage must share their settings")
            v += [index(s.layers, len(run), f"{w} layers"), index(s.kernels, first.kernel_size, f"{w} kernel"),
                  index(s.acts, "relu" if self.distill else first.act, f"{w} act"),
                  index(s.expansions, getattr(first, "expansion", 1) if s.block != "conv" else 1, f"{w} expansion"),
                  index(s.filters, first.out_channels, f"{w} filters"),
                  index(s.se, bool(getattr(first, "use_se", False)), f"{w} se")]
        if pos != len(blocks):
            raise SearchSpaceError(f"block {pos} (stage {blocks[pos].stage}) is not in the space's stage order")
        if arch.tail.out_channels != self.tail_width:
            raise SearchSpaceError(f"tail width {arch.tail.out_channels}, the space has {self.tail_width}")
        v.append(index(self.resolutions, arch.img_resolution, "resolution"))
        out = self.canonical(v)
        return out

    # ------------------------------------------------------------------ sampling

    def sample(self, rng: np.random.Generator) -> np.ndarray:
        """A uniformly random point (each gene uniform over its choices), canonical."""
        return self.canonical(rng.integers(0, self.gene_sizes()))

    def mutate(self, vector: Vector, rng: np.random.Generator, rate: float | None = None) -> np.ndarray:
        """Resample each mutable gene with probability `rate` (default 1/#genes); at least one changes."""
        sizes = self.gene_sizes()
        mutable = np.flatnonzero(sizes > 1)
        v = np.asarray(vector, dtype=np.int64).copy()
        if mutable.size == 0:
            return self.canonical(v)
        p = 1.0 / mutable.size if rate is None else rate
        flips = mutable[rng.random(mutable.size) < p]
        if flips.size == 0:
            flips = np.array([mutable[rng.integers(mutable.size)]])
        for i in flips:
            new = int(rng.integers(sizes[i] - 1))
            v[i] = new if new < v[i] else new + 1  # any other choice, uniformly
        return self.canonical(v)

    def crossover(self, a: Vector, b: Vector, rng: np.random.Generator) -> np.ndarray:
        """Uniform crossover, stage-wise (a stage's genes travel together, so stages stay coherent)."""
        a, b = np.asarray(a), np.asarray(b)
        child = a.copy()
        groups = [[0, 1]] + [list(range(2 + GENES_PER_STAGE * i, 2 + GENES_PER_STAGE * (i + 1)))
                             for i in range(len(self.stages))] + [[len(a) - 1]]
        for g in groups:
            if rng.random() < 0.5:
                child[g] = b[g]
        return self.canonical(child)

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stages"] = [asdict(s) for s in self.stages]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SearchSpace:
        if not isinstance(d, dict):
            raise SearchSpaceError("a search space file holds a JSON object")
        known = {"stages", "head_filters", "head_acts", "resolutions", "tail_width", "distill", "name", "in_channels"}
        unknown = set(d) - known
        if unknown:
            raise SearchSpaceError(f"unknown search space field(s): {', '.join(sorted(unknown))}")
        kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in d.items() if k != "stages"}
        stages = []
        for i, s in enumerate(d.get("stages") or []):
            try:
                kws: dict[str, Any] = {str(k): (tuple(v) if isinstance(v, list) else v) for k, v in s.items()}
                stages.append(StageSpace(**kws))
            except TypeError as exc:
                raise SearchSpaceError(f"stages[{i}]: {exc}") from None
        return cls(stages=tuple(stages), **kw)

    def save(self, path: str | os.PathLike[str]) -> None:
        from gpunet._io import atomic_write_bytes

        atomic_write_bytes(path, (json.dumps(self.to_dict(), indent=2) + "\n").encode())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SearchSpace:
        p = os.fspath(path)
        try:
            with open(p, encoding="utf-8") as f:
                text = f.read()
        except OSError as exc:
            raise SearchSpaceError(f"{p}: cannot read ({exc.strerror or exc})") from None
        try:
            if p.endswith((".yaml", ".yml")):
                import yaml

                obj = yaml.safe_load(text)
            else:
                obj = json.loads(text)
        except Exception as exc:
            raise SearchSpaceError(f"{p}: not valid JSON/YAML ({exc})") from None
        try:
            return cls.from_dict(obj)
        except SearchSpaceError as exc:
            raise SearchSpaceError(f"{p}: {exc}") from None

    def with_(self, **changes: Any) -> SearchSpace:
        return replace(self, **changes)


def arch_key(arch: Architecture) -> str:
    """Stable id of an architecture: sha1 of its canonical NVIDIA JSON (12 hex digits)."""
    text = json.dumps(arch.to_json(), sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(text.encode()).hexdigest()[:12]


_TWO_SIX = (2, 3, 4, 5, 6)
_KS = (3, 5)
_ACTS = ("relu", "swish")


def nvidia_space() -> SearchSpace:
    """NVIDIA's published GPUNet search space (non-distilled family)."""
    return SearchSpace(name="nvidia", stages=(
        StageSpace(1, "conv", 1, _KS, _range(1, 4, 1), _ACTS, _range(24, 32, 8)),
        StageSpace(2, "fused_irb", 2, _KS, _range(1, 8, 1), _ACTS, _range(32, 80, 16), _TWO_SIX, (False, True)),
        StageSpace(3, "fused_irb", 2, _KS, _range(1, 8, 1), _ACTS, _range(48, 112, 16), _TWO_SIX, (False, True)),
        StageSpace(4, "irb", 2, _KS, _range(1, 10, 1), _ACTS, _range(96, 192, 16), _TWO_SIX, (False, True)),
        StageSpace(5, "irb", 1, _KS, _range(0, 15, 1), _ACTS, _range(112, 224, 16), _TWO_SIX, (False, True)),
        StageSpace(6, "irb", 2, _KS, _range(1, 15, 1), _ACTS, _range(128, 416, 32), _TWO_SIX, (False, True)),
        StageSpace(7, "irb", 1, _KS, _range(0, 15, 1), _ACTS, _range(256, 832, 64), _TWO_SIX, (False, True)),
    ))


def tiny_space() -> SearchSpace:
    """A small space with the same structure (for tests and CPU examples): 32-64 px, narrow, shallow."""
    return SearchSpace(name="tiny", head_filters=(8, 16), resolutions=(32, 48, 64), tail_width=128, stages=(
        StageSpace(1, "conv", 1, _KS, (1, 2), _ACTS, (8, 16)),
        StageSpace(2, "fused_irb", 2, _KS, (1, 2), _ACTS, (16, 24), (2, 4), (False, True)),
        StageSpace(3, "irb", 2, _KS, (1, 2), _ACTS, (24, 32), (2, 4), (False, True)),
        StageSpace(4, "irb", 1, _KS, (0, 1, 2), _ACTS, (32, 48), (2, 4), (False, True)),
        StageSpace(5, "irb", 2, _KS, (1, 2), _ACTS, (48, 64), (2, 4), (False, True)),
    ))


PRESETS = {"nvidia": nvidia_space, "tiny": tiny_space}


def get_space(name_or_path: str | os.PathLike[str]) -> SearchSpace:
    """A preset name (`nvidia`, `tiny`) or a saved space file."""
    s = os.fspath(name_or_path)
    if s in PRESETS:
        return PRESETS[s]()
    if os.path.exists(s):
        return SearchSpace.load(s)
    raise SearchSpaceError(f"unknown search space {s!r}: a preset ({', '.join(PRESETS)}) or a space JSON/YAML file")
