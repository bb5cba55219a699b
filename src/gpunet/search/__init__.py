"""Architecture search: GPUNets on the Pareto front of latency (on your device) and accuracy (on your data).

- `space`: the search space (NVIDIA's table as a value), sampling, mutation, encode/decode;
- `latency`: real measurements, the per-layer lookup table and the corrected predictor;
- `optimizer`: NSGA-II (non-dominated sorting, crowding, constrained dominance);
- `runner`: the search itself (Ray tasks, persisted state, outputs) and `gpunet search`.
"""

from gpunet.search.latency import LatencyContext, LatencyPredictor, LatencyTable, mape, measure_model, spearman
from gpunet.search.optimizer import Point, non_dominated_sort, pareto_front
from gpunet.search.runner import SearchConfig, SearchError, SearchResult, add_search_arguments, run_search, search
from gpunet.search.space import SearchSpace, SearchSpaceError, StageSpace, arch_key, get_space, nvidia_space, tiny_space

__all__ = [
    "LatencyContext", "LatencyPredictor", "LatencyTable", "Point", "SearchConfig", "SearchError", "SearchResult",
    "SearchSpace", "SearchSpaceError", "StageSpace", "add_search_arguments", "arch_key", "get_space", "mape",
    "measure_model", "non_dominated_sort", "nvidia_space", "pareto_front", "run_search", "search", "spearman",
    "tiny_space",
]
