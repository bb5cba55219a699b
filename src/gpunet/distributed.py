"""Deprecated: the multi-process training helpers are in `gpunet.train.distributed`."""

from gpunet._deprecation import moved

__getattr__ = moved(__name__, {
    **dict.fromkeys(("DistInfo", "init_distributed", "all_reduce_sum", "CPUSyncBatchNorm",
                     "convert_cpu_sync_batchnorm", "ResumableDistributedSampler", "ShardSampler"),
                    "gpunet.train.distributed"),
    "DistributedError": "gpunet.errors",
})
