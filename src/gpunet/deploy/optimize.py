"""Inference mode of a PyTorch GPUNet: the same function, fewer and faster operations.

`optimize_for_inference(model)` is the fast path: BatchNorm folded into the convolutions,
dropout/drop-path removed, channels_last weights (oneDNN's and cuDNN's preferred layout for
depthwise and 1x1 convolutions), and on request: channel counts padded to multiples of 8 with
zero weights (`pad_channels=8`, tensor cores; `gpunet.deploy.padding`), another precision,
`torch.compile` (inductor; on CPU with weight freezing, which fuses activations and residual adds
into the oneDNN convolutions) and CUDA graphs (`cuda_graph=True`: the whole forward replayed as
one graph per input shape, `CudaGraphModule`). `mode="auto"` picks the best path for the device
and precision (`plan_inference` says which).

CUDA graphs come from one place, `CudaGraphModule`, never from inductor's own (`mode=
"reduce-overhead"`/`"max-autotune"`, CUDA graph trees): two graph mechanisms in one process,
with their separate memory pools, are what a benchmark run mixing both crashed on (see
docs/performance.md). A `CudaGraphModule` keeps the module whose weights its graphs read, checks
every input against the captured shape, dtype and device, and returns copies of the outputs by
default.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from gpunet._optional import importable
from gpunet.device import PRECISIONS, cudnn_autotune, resolve_device
from gpunet.errors import SettingError
from gpunet.model import fuse

MODES = ("manual", "auto")
GRAPH_COMPILE_MODES = ("reduce-overhead", "max-autotune")  # inductor modes that capture CUDA graphs themselves
AUTO_CUDA_COMPILE_MODE = "max-autotune-no-cudagraphs"  # inductor's tuned kernels; the graph is ours


@dataclass(frozen=True)
class InferencePlan:
    """What `optimize_for_inference` does to a model: each step, resolved for one device."""

    device: torch.device
    dtype: torch.dtype | None = None  # None: keep the model's
    channels_last: bool = True
    pad_channels: int | None = None
    compile: bool = False
    compile_mode: str | None = None
    freeze: bool = False
    dynamic: bool | None = None
    cuda_graph: bool = False
    micro_batch: int | None = None
    triton_depthwise: bool = False

    def describe(self) -> str:
        """One line: 'fused, channels_last, padded to 8, fp16, torch.compile(...), CUDA graph'."""
        parts = ["fused"]
        if self.channels_last:
            parts.append("channels_last")
        if self.pad_channels:
            parts.append(f"channels padded to {self.pad_channels}")
        if self.triton_depthwise:
            parts.append("Triton depthwise+act")
        if self.dtype is not None:
            parts.append({v: k for k, v in PRECISIONS.items()}.get(self.dtype, str(self.dtype)))
        if self.compile:
            detail = ", ".join(p for p in (self.compile_mode, "freezing" if self.freeze else None) if p)
            parts.append(f"torch.compile({detail or 'inductor'})")
        if self.cuda_graph:
            parts.append("CUDA graph")
        if self.micro_batch:
            parts.append(f"micro-batch {self.micro_batch}")
        return ", ".join(parts)


def plan_inference(device: str | torch.device = "cpu", *, mode: str = "manual", precision: str | None = None,
                   dtype: torch.dtype | None = None, channels_last: bool = True, pad_channels: int | None = None,
                   compile: bool | None = None, compile_mode: str | None = None, freeze: bool | None = None,
                   dynamic: bool | None = None, cuda_graph: bool | None = None,
                   micro_batch: int | None = None, triton_depthwise: bool = False) -> InferencePlan:
    """The steps `optimize_for_inference` takes with these arguments on `device` (no model needed).

    `mode="auto"` fills what is left at None: on CUDA channel padding to 8, torch.compile with
    inductor's tuned kernels (`"max-autotune-no-cudagraphs"`, when Triton is installed) and a
    CUDA graph around it; on CPU the fused channels_last model (the fastest PyTorch CPU path
    measured, docs/performance.md). `mode="manual"` does exactly what the arguments say.
    `triton_depthwise` is never picked by "auto" (not yet measured on a GPU): ask for it.
    """
    if mode not in MODES:
        raise SettingError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
    dev = resolve_device(device) if isinstance(device, str) else device
    on_cuda = dev.type == "cuda"
    if mode == "auto" and on_cuda:
        pad_channels = 8 if pad_channels is None else pad_channels
        compile = importable("triton") if compile is None else compile
        compile_mode = (AUTO_CUDA_COMPILE_MODE if compile else None) if compile_mode is None else compile_mode
        cuda_graph = True if cuda_graph is None else cuda_graph
    plan = InferencePlan(dev, _resolve_dtype(precision, dtype), channels_last, pad_channels or None,
                         bool(compile), compile_mode, bool(not on_cuda if freeze is None else freeze), dynamic,
                         bool(cuda_graph), micro_batch, bool(triton_depthwise))
    return _checked(plan)


def _checked(plan: InferencePlan) -> InferencePlan:
    """Combinations that cannot work are usage errors, said before anything is built."""
    if plan.cuda_graph and plan.device.type != "cuda":
        raise SettingError(f"cuda_graph=True needs a CUDA device, got {plan.device}")
    if plan.cuda_graph and plan.compile_mode in GRAPH_COMPILE_MODES:
        raise SettingError(f"cuda_graph=True with compile_mode={plan.compile_mode!r}: that mode captures inductor's "
                           "own CUDA graphs; use one of the two (e.g. compile_mode='max-autotune-no-cudagraphs')")
    if plan.micro_batch is not None and plan.micro_batch < 1:
        raise SettingError(f"micro_batch must be >= 1, got {plan.micro_batch}")
    if plan.triton_depthwise:
        from gpunet.deploy.depthwise import kernel_can_run

        if plan.compile:
            raise SettingError("triton_depthwise=True with compile=True: inductor writes its own fused kernels; "
                               "use one of the two")
        reason = kernel_can_run(plan.device)
        if reason is not None:
            raise SettingError(f"triton_depthwise=True: {reason}")
    return replace(plan, compile_mode=None) if plan.compile_mode is not None and not plan.compile else plan


def _resolve_dtype(precision: str | None, dtype: torch.dtype | None) -> torch.dtype | None:
    if precision is None:
        return dtype
    if precision not in PRECISIONS:
        raise SettingError(f"precision: expected one of {', '.join(PRECISIONS)}, got {precision!r}")
    if dtype is not None and dtype != PRECISIONS[precision]:
        raise SettingError(f"precision={precision!r} and dtype={dtype} disagree: give one of them")
    return PRECISIONS[precision]


def optimize_for_inference(model: nn.Module, *, mode: str = "manual", device: str | torch.device | None = None,
                           precision: str | None = None, dtype: torch.dtype | None = None,
                           channels_last: bool = True, pad_channels: int | None = None, compile: bool | None = None,
                           compile_mode: str | None = None, freeze: bool | None = None, dynamic: bool | None = None,
                           cuda_graph: bool | None = None, micro_batch: int | None = None,
                           triton_depthwise: bool = False) -> nn.Module:
    """Fuse (in place), then apply the steps of `plan_inference(...)` with the same arguments.

    `device` (default: where the model's weights are) moves the model; `precision` ("fp32",
    "bf16", "fp16") or `dtype` converts it; `pad_channels=8` pads channel counts with zero
    weights (GPUNet classifiers; outputs unchanged); `compile=True` wraps it in `torch.compile`
    (needs a C++ compiler on CPU, Triton on CUDA; the first calls compile): `compile_mode`
    defaults to inductor's default, `freeze` (default: True on CPU) lets inductor treat the
    weights as constants -- run the model under `torch.inference_mode()`/`torch.no_grad()` and
    do not change its weights afterwards. `cuda_graph=True` (CUDA) replays the forward as one
    CUDA graph per input shape (`CudaGraphModule`). `mode="auto"` picks these for the device.
    `triton_depthwise=True` (CUDA) runs each depthwise convolution with its bias and activation
    as one Triton kernel (`gpunet.deploy.depthwise`); pair it with `cuda_graph=True` at small
    batches, where launching Triton kernels from Python costs more than they save.

    Feed channels_last inputs (`x.to(memory_format=torch.channels_last)`) to a channels_last
    model (contiguous inputs work too, at the cost of one conversion), and inputs of the model's
    dtype to a converted one (`x.half()` for "fp16"), as to any PyTorch module. cuDNN autotuning is
    process-wide state, so it is not switched on here: CUDA graphs autotune while they capture
    (`cudnn_autotune`), and a script that runs the model without graphs can wrap its loop in
    `with cudnn_autotune():`.

    `micro_batch=N` (CPU, large batches) returns a `MicroBatch` wrapper that runs the batch N
    images at a time: per-image activations of the high-resolution stages then stay in the
    caches, which on a small CPU is 2-4x faster at batch 8 than one big batch (same outputs).
    """
    plan = plan_inference(_model_device(model) if device is None else device, mode=mode, precision=precision,
                          dtype=dtype, channels_last=channels_last, pad_channels=pad_channels, compile=compile,
                          compile_mode=compile_mode, freeze=freeze, dynamic=dynamic, cuda_graph=cuda_graph,
                          micro_batch=micro_batch, triton_depthwise=triton_depthwise)
    return apply_plan(model, plan)


def apply_plan(model: nn.Module, plan: InferencePlan) -> nn.Module:
    """The steps of `plan` on `model` (fused in place first): pad, Triton depthwise, move/convert, layout, compile,
    graph, chunk."""
    model = fuse(model)
    if plan.pad_channels:
        from gpunet.deploy.padding import pad_channels

        model = pad_channels(model, plan.pad_channels)
    if plan.triton_depthwise:
        from gpunet.deploy.depthwise import use_triton_depthwise

        use_triton_depthwise(model)
    model = model.to(device=plan.device, dtype=plan.dtype)
    if plan.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if plan.compile:
        model = _compiled(model, plan)
    if plan.cuda_graph:
        model = CudaGraphModule(model)
    if plan.micro_batch is not None:
        model = MicroBatch(model, plan.micro_batch)
    return model


def _model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _compiled(model: nn.Module, plan: InferencePlan) -> nn.Module:
    """`torch.compile` with the plan's mode; freezing goes into the options (torch takes a mode or options)."""
    mode = plan.compile_mode
    options: dict[str, Any] | None = {"freezing": True} if plan.freeze else None
    if mode is not None and options is not None:
        options.update(torch._inductor.list_mode_options(mode))
        mode = None
    return torch.compile(model, mode=mode, options=options, dynamic=plan.dynamic)  # type: ignore[return-value]


class MicroBatch(nn.Module):
    """Run `module` on chunks of at most `size` images and concatenate the outputs (tensors or lists)."""

    def __init__(self, module: nn.Module, size: int = 1) -> None:
        super().__init__()
        if size < 1:
            raise SettingError(f"micro_batch must be >= 1, got {size}")
        self.module = module
        self.size = size

    def forward(self, x: torch.Tensor) -> Any:
        if x.shape[0] <= self.size:
            return self.module(x)
        outs = [self.module(chunk) for chunk in x.split(self.size)]
        if isinstance(outs[0], torch.Tensor):
            return torch.cat(outs)
        return [torch.cat(parts) for parts in zip(*outs, strict=True)]


# ---------------------------------------------------------------------------- CUDA graphs

GraphKey = tuple[tuple[int, ...], torch.dtype, torch.device]


@dataclass
class _Graph:
    """One captured forward: its graph, the static input it reads and the static output it writes."""

    graph: Any  # torch.cuda.CUDAGraph
    static_in: torch.Tensor
    static_out: Any  # a tensor or a list of tensors (features_only backbones)

    def replay(self, x: torch.Tensor) -> Any:
        if x.data_ptr() != self.static_in.data_ptr():
            self.static_in.copy_(x)
        self.graph.replay()
        return self.static_out


def _clone(out: Any) -> Any:
    return [t.clone() for t in out] if isinstance(out, (list, tuple)) else out.clone()


class CudaGraphModule(nn.Module):
    """`module`'s inference forward replayed as one CUDA graph per input (shape, dtype, device).

    The first call with a new input shape warms the module up on a side stream (cuDNN
    autotuning on, `cudnn_autotune`, for the warm-up and the capture only) and captures one
    forward into a graph with its own memory pool; later calls copy the input into the graph's
    static input and replay it. This removes the per-kernel launch cost that dominates small
    batches on fast GPUs. The module is held (its weights are what the graph reads: they must
    not be freed or reassigned), at most `max_graphs` shapes are kept (the least recently used
    goes), and outputs are copied out (`clone_outputs=True`) so that a later call cannot
    overwrite what an earlier one returned; a benchmark that discards outputs may skip the copy.
    Inference only: runs under `torch.no_grad()`, without autograd.
    """

    def __init__(self, module: nn.Module, *, warmup: int = 3, clone_outputs: bool = True, autotune: bool = True,
                 max_graphs: int = 8) -> None:
        super().__init__()
        if max_graphs < 1 or warmup < 1:
            raise SettingError(f"CudaGraphModule: warmup and max_graphs must be >= 1, got {warmup}, {max_graphs}")
        self.module = module
        self.warmup, self.clone_outputs, self.autotune, self.max_graphs = warmup, clone_outputs, autotune, max_graphs
        self._graphs: OrderedDict[GraphKey, _Graph] = OrderedDict()

    @staticmethod
    def key(x: torch.Tensor) -> GraphKey:
        return tuple(x.shape), x.dtype, x.device

    def capture(self, example: torch.Tensor) -> None:
        """Capture the graph for `example`'s shape now (the first call with it would otherwise)."""
        if not isinstance(example, torch.Tensor) or example.device.type != "cuda":
            where = example.device if isinstance(example, torch.Tensor) else type(example).__name__
            raise SettingError(f"CUDA graphs need a CUDA input tensor, got one on {where}")
        key = self.key(example)
        if key in self._graphs:
            return
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        self._graphs[key] = _capture(self.module, example, self.warmup, self.autotune)

    @property
    def captured(self) -> list[GraphKey]:
        """The (shape, dtype, device) of each graph held, oldest first."""
        return list(self._graphs)

    def forward(self, x: torch.Tensor) -> Any:
        self.capture(x)
        key = self.key(x)
        self._graphs.move_to_end(key)
        with torch.no_grad():
            out = self._graphs[key].replay(x)
            return _clone(out) if self.clone_outputs else out


def _capture(module: nn.Module | Callable[[torch.Tensor], Any], example: torch.Tensor, warmup: int,
             autotune: bool) -> _Graph:
    """Warm up on a side stream, then capture one forward of `module` on a copy of `example`."""
    device = example.device
    with torch.inference_mode(False):  # a normal tensor even when called under inference_mode: later calls
        static_in = example.detach().clone()  # copy into it in any mode (keeps example's memory format)
    with torch.cuda.device(device), torch.inference_mode(), cudnn_autotune(autotune):
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                module(static_in)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):  # a private memory pool and capture stream of its own
            static_out = module(static_in)
    torch.cuda.synchronize(device)
    return _Graph(graph, static_in, static_out)


def capture_cuda_graph(model: nn.Module, example: torch.Tensor, *, warmup: int = 3,
                       clone_outputs: bool = True) -> CudaGraphModule:
    """`model` as a `CudaGraphModule` with the graph for `example` (a CUDA tensor) captured now.

    Call it like the model: inputs of `example`'s shape replay that graph, other shapes capture
    their own. Outputs are copies unless `clone_outputs=False` (then each call overwrites the
    previous output of the same shape: clone it to keep it).
    """
    graphed = CudaGraphModule(model, warmup=warmup, clone_outputs=clone_outputs)
    graphed.capture(example)
    return graphed
