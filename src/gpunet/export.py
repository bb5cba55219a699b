"""Deprecated path: the exporters live in `gpunet.deploy` (`gpunet.deploy.onnx`, `.openvino`, `.torchscript`,
`.triton`, `.tensorrt`, `.metadata`, `.common`). Every public name of the old module still resolves here, with a
DeprecationWarning naming its new home. The command-line functions (`add_export_arguments`, `run_export`) are
`gpunet.cli.export` now.
"""

from gpunet._deprecation import moved

_COMMON = "gpunet.deploy.common"
_METADATA = "gpunet.deploy.metadata"
_ONNX = "gpunet.deploy.onnx"
_OPENVINO = "gpunet.deploy.openvino"
_TENSORRT = "gpunet.deploy.tensorrt"
_TRITON = "gpunet.deploy.triton"

__getattr__ = moved(__name__, {
    "INPUT_NAME": _COMMON, "OUTPUT_NAME": _COMMON, "FP32_RTOL": _COMMON, "FP16_RTOL": _COMMON,
    "CHECK_BATCHES_DYNAMIC": _COMMON, "ExportReport": _COMMON,
    "META_ARCHITECTURE": _METADATA, "META_PREPROCESS": _METADATA, "META_LABELS": _METADATA,
    "META_VERSION": _METADATA, "META_MODEL": _METADATA, "META_NUM_CLASSES": _METADATA, "META_FUSED": _METADATA,
    "META_PRECISION": _METADATA, "set_metadata": _METADATA, "read_metadata": _METADATA,
    "DEFAULT_OPSET": _ONNX, "LEGACY_OPSET": _ONNX, "export_onnx": _ONNX, "onnx_session": _ONNX,
    "OPENVINO_PRECISIONS": _OPENVINO, "openvino_model": _OPENVINO, "export_openvino": _OPENVINO,
    "openvino_available": "gpunet.deploy.packages",
    "TENSORRT_INSTALL": _TENSORRT, "tensorrt_available": _TENSORRT, "export_tensorrt": _TENSORRT,
    "triton_config": _TRITON, "export_triton": _TRITON, "export_triton_report": _TRITON,
    "export_torchscript": "gpunet.deploy.torchscript",
    "preprocess_config": "gpunet.transforms",  # the one preprocessing config (takes no img_size any more)
    "FORMATS": "gpunet.cli.export",
    "ExportError": "gpunet.errors",
})
