"""A search on disk, so a killed search resumes: candidates.jsonl (one line per finished candidate) and state.json.

candidates.jsonl is appended to, flushed and fsynced once per finished candidate (a kill can
tear at most the last line, which is ignored); state.json (generation, population, pending
proposals, RNG state, predictor, real measurements) is replaced atomically.
"""

from __future__ import annotations

import json
import os
from typing import Any

from gpunet._io import atomic_write_bytes

STATE_VERSION = 1


def append_candidate(path: str, record: dict[str, Any]) -> None:
    """Append one finished candidate to `path` (JSON lines), durably."""
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


def load_state(path: str) -> dict[str, Any]:
    """The saved state, or {} for a new search."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        state: dict[str, Any] = json.load(f)
    return state


def save_state(path: str, state: dict[str, Any]) -> None:
    atomic_write_bytes(path, (json.dumps(state, indent=1, sort_keys=True) + "\n").encode())
