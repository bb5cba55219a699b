"""TorchScript: a traced, frozen GPUNet (`torch.jit.load` runs it without gpunet), checked against eager PyTorch."""

from __future__ import annotations

import json
import os

import torch
from torch import nn

from gpunet._io import atomic_path
from gpunet.deploy.common import (
    CHECK_BATCHES_DYNAMIC,
    FP32_RTOL,
    ExportReport,
    check_export_path,
    check_parity,
    deploy_copy,
    export_img_size,
    quiet_exporter,
)
from gpunet.deploy.metadata import model_metadata

METADATA_FILE = "gpunet_metadata.json"  # the extra file holding the gpunet metadata


def export_torchscript(model: nn.Module, path: str | os.PathLike[str], *, img_size: int | None = None,
                       fuse: bool = True, check: bool = True) -> ExportReport:
    """torch.jit.trace + freeze -> `path` (load with torch.jit.load). Checked against eager at batch 1 and 3.

    TorchScript is deprecated by PyTorch (FutureWarnings in torch 2.14); it still works and its
    warnings are silenced here. Prefer ONNX for new deployments. The gpunet metadata is the
    extra file `gpunet_metadata.json` (`torch.jit.load(path, _extra_files=...)`).
    """
    check_export_path(path)
    size = export_img_size(model, img_size)
    net = deploy_copy(model, fuse)
    example = torch.randn(2, 3, size, size)
    report = ExportReport(path=os.fspath(path), format="torchscript", img_size=size, fused=fuse,
                          exporter="torch.jit.trace")
    with quiet_exporter(), torch.no_grad():
        traced = torch.jit.trace(net, example, check_trace=False)
        frozen = torch.jit.freeze(traced)
        extra = {METADATA_FILE: json.dumps(model_metadata(model, size, fused=fuse, precision="fp32"))}
        with atomic_path(path) as tmp:  # checked before it replaces `path`
            torch.jit.save(frozen, tmp, _extra_files=extra)
            report.size_bytes = os.path.getsize(tmp)
            if check:
                loaded = torch.jit.load(tmp, map_location="cpu")
                report.max_abs_diff, report.tolerance = check_parity(
                    lambda x: loaded(torch.from_numpy(x)).numpy(), os.fspath(path), "TorchScript", net, size,
                    CHECK_BATCHES_DYNAMIC, FP32_RTOL)
                report.batch_sizes = CHECK_BATCHES_DYNAMIC
    return report
