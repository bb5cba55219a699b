"""Architecture search: GPUNets on the Pareto front of latency (on your device) and accuracy (on your data).

    from gpunet.search import SearchConfig, search
    result = search(SearchConfig(data="digits", output="out", budget_ms=1.5, space="tiny"))

- `space`: the search space (NVIDIA's table as a value), sampling, mutation, encode/decode;
- `latency`: real measurements, the per-layer lookup table and the corrected predictor;
- `optimizer`: NSGA-II (non-dominated sorting, crowding, constrained dominance);
- `config`: `SearchConfig` and `SearchResult`;
- `runner`: the search itself (`search`), with `evaluate` (candidates trained as Ray tasks),
  `state` (what a killed search resumes from) and `outputs` (front, summary, plot).

The command line (`gpunet search`) is `gpunet.cli.search`.
"""

from typing import TYPE_CHECKING

from gpunet._deprecation import moved
from gpunet._lazy import lazy_attributes

if TYPE_CHECKING:
    from gpunet.errors import SearchError, SearchSpaceError
    from gpunet.search.config import SearchConfig, SearchResult
    from gpunet.search.latency import LatencyContext, LatencyPredictor, LatencyTable, mape, measure_model, spearman
    from gpunet.search.optimizer import Point, non_dominated_sort, pareto_front
    from gpunet.search.runner import search
    from gpunet.search.space import SearchSpace, StageSpace, arch_key, get_space, nvidia_space, tiny_space

_SOURCES = {
    "SearchError": "gpunet.errors",
    "SearchSpaceError": "gpunet.errors",
    "SearchConfig": "gpunet.search.config",
    "SearchResult": "gpunet.search.config",
    "LatencyContext": "gpunet.search.latency",
    "LatencyPredictor": "gpunet.search.latency",
    "LatencyTable": "gpunet.search.latency",
    "mape": "gpunet.search.latency",
    "measure_model": "gpunet.search.latency",
    "spearman": "gpunet.search.latency",
    "Point": "gpunet.search.optimizer",
    "non_dominated_sort": "gpunet.search.optimizer",
    "pareto_front": "gpunet.search.optimizer",
    "search": "gpunet.search.runner",
    "SearchSpace": "gpunet.search.space",
    "StageSpace": "gpunet.search.space",
    "arch_key": "gpunet.search.space",
    "get_space": "gpunet.search.space",
    "nvidia_space": "gpunet.search.space",
    "tiny_space": "gpunet.search.space",
}

__all__ = [
    "LatencyContext", "LatencyPredictor", "LatencyTable", "Point", "SearchConfig", "SearchError", "SearchResult",
    "SearchSpace", "SearchSpaceError", "StageSpace", "arch_key", "get_space", "mape", "measure_model",
    "non_dominated_sort", "nvidia_space", "pareto_front", "search", "spearman", "tiny_space",
]

# the command-line functions moved to gpunet.cli.search
__getattr__ = lazy_attributes(__name__, _SOURCES, fallback=moved(__name__, {
    "add_search_arguments": "gpunet.cli.search", "run_search": "gpunet.cli.search"}))
