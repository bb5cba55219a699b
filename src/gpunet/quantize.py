"""Deprecated path: INT8 quantization lives in `gpunet.deploy.quantize`.

Every public name of the old module still resolves here, with a DeprecationWarning naming its new home. The
command-line functions (`add_quantize_arguments`, `run_quantize`) are `gpunet.cli.quantize` now.
"""

from gpunet._deprecation import moved

_QUANTIZE = "gpunet.deploy.quantize"

__getattr__ = moved(__name__, {
    "DEFAULT_NUM_IMAGES": _QUANTIZE, "CALIBRATION_BATCH": _QUANTIZE, "ACTIVATION_TYPES": _QUANTIZE,
    "Preprocess": _QUANTIZE, "QuantReport": _QUANTIZE, "onnx_preprocess": _QUANTIZE,
    "calibration_images": _QUANTIZE, "ImageCalibrationReader": _QUANTIZE, "quantize_onnx": _QUANTIZE,
    "compare_int8": _QUANTIZE, "format_report": _QUANTIZE,
    "META_QUANTIZATION": "gpunet.deploy.metadata",
    "QuantizeError": "gpunet.errors",
})
