"""Deployment: a GPUNet made fast in PyTorch, exported to other runtimes, and those files run and quantized.

    optimize     fuse, optimize_for_inference (mode="auto": the best path for the device and precision),
                 plan_inference/apply_plan, CudaGraphModule, cudnn_autotune, MicroBatch (PyTorch itself)
    padding      pad_channels: channel counts padded to multiples of 8 with zeros (outputs unchanged)
    depthwise    TritonDepthwise, use_triton_depthwise: depthwise conv + bias + activation as one Triton kernel
    common       ExportReport, the exported copy of a model, batch/size checks, the parity check
    metadata     the gpunet keys every exported file carries; set_metadata, read_metadata
    packages     the optional packages (onnx, onnxruntime, openvino): import or say what to install
    onnx         trace_onnx (the one ONNX export), export_onnx, onnx_session
    openvino     export_openvino, openvino_model (precision pinned), the signal-stack fix
    torchscript  export_torchscript
    triton       triton_config, export_triton (a Triton Inference Server model repository entry)
    tensorrt     export_tensorrt, engine_runner
    runtime      open_runner (one registry: ONNX Runtime, OpenVINO), ExportedModel
    quantize     quantize_onnx (static INT8 QDQ), compare_int8

Data flows one way: a model -> `deploy_copy` (fused copy) -> `trace_onnx` -> a checked file
with metadata -> `open_runner`/`ExportedModel` run it. Nothing here imports the command line,
`gpunet.classify` or `gpunet.evaluate`.
"""

from gpunet.deploy.common import ExportReport
from gpunet.deploy.depthwise import TritonDepthwise, use_triton_depthwise
from gpunet.deploy.metadata import read_metadata, set_metadata
from gpunet.deploy.onnx import export_onnx, onnx_session, trace_onnx
from gpunet.deploy.openvino import export_openvino, openvino_model
from gpunet.deploy.optimize import (
    CudaGraphModule,
    InferencePlan,
    MicroBatch,
    apply_plan,
    capture_cuda_graph,
    cudnn_autotune,
    fuse,
    optimize_for_inference,
    plan_inference,
)
from gpunet.deploy.packages import openvino_available
from gpunet.deploy.padding import pad_channels
from gpunet.deploy.quantize import QuantReport, compare_int8, format_report, onnx_preprocess, quantize_onnx
from gpunet.deploy.runtime import ExportedModel, Runner, is_exported, open_runner
from gpunet.deploy.tensorrt import engine_runner, export_tensorrt, tensorrt_available
from gpunet.deploy.torchscript import export_torchscript
from gpunet.deploy.triton import export_triton, export_triton_report, triton_config

__all__ = [
    "CudaGraphModule", "InferencePlan", "TritonDepthwise", "use_triton_depthwise",
    "apply_plan", "cudnn_autotune", "pad_channels", "plan_inference",
    "ExportReport", "ExportedModel", "MicroBatch", "QuantReport", "Runner", "capture_cuda_graph", "compare_int8",
    "engine_runner", "export_onnx", "export_openvino", "export_tensorrt", "export_torchscript", "export_triton",
    "export_triton_report", "format_report", "fuse", "is_exported", "onnx_preprocess", "onnx_session",
    "open_runner", "openvino_available", "openvino_model", "optimize_for_inference", "quantize_onnx",
    "read_metadata", "set_metadata", "tensorrt_available", "trace_onnx", "triton_config",
]
