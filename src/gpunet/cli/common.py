"""What every `gpunet` command shares: exit codes, messages to stderr, the model/weights options."""

from __future__ import annotations

import argparse
import os
import sys
import textwrap

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2
DEFAULT_MODEL = "gpunet_d1"
DEVICE_HELP = "auto (cuda if available), cpu, cuda or cuda:N"
WEIGHTS_HELP = "checkpoint: NGC zip, timm .pth.tar, state dict, .safetensors, or an http(s)/file URL"


class CLIError(Exception):
    """A command-line usage problem with a ready message and exit status (never escapes `main`)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def err(message: str) -> None:
    """One message line (or paragraph) on stderr."""
    print(message, file=sys.stderr, flush=True)


def wrap(text: str, width: int = 100) -> str:
    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)


def warn_random(model: str, what: str = "its labels and accuracies are") -> None:
    err(wrap(f"gpunet: WARNING: --random-weights: {model} has untrained, random weights; {what} MEANINGLESS "
             "(smoke test only)."))


def progress() -> bool:
    """Progress bars only on an interactive terminal."""
    return sys.stderr.isatty()


def pretrained_desc() -> str:
    mirror = os.environ.get("GPUNET_NGC_MIRROR")
    return f"pretrained, NGC mirror {mirror}" if mirror else "pretrained, NGC"


# option dest -> (flag, smallest allowed value) of the counts a command may have
COUNT_OPTIONS = {"top_k": ("--top-k", 1), "batch_size": ("--batch-size", 1), "limit": ("--limit", 1),
                 "workers": ("--workers", 0), "num_images": ("--num-images", 1), "threads": ("--threads", 1),
                 "max_batch_size": ("--max-batch-size", 1)}


def check_options(args: argparse.Namespace) -> None:
    """The value checks of the counts, --img-size and --crop-pct a command has, before any work.

    The rules are the library's (`gpunet._checks`, `gpunet.limits.check_image_size`); the message
    names the option as typed.
    """
    from gpunet._checks import check_count, check_fraction
    from gpunet.limits import check_image_size

    for dest, (flag, minimum) in COUNT_OPTIONS.items():
        if getattr(args, dest, None) is not None:
            check_count(getattr(args, dest), flag, minimum)
    if getattr(args, "img_size", None) is not None:
        check_image_size(args.img_size, setting="--img-size")
    if getattr(args, "crop_pct", None) is not None:
        check_fraction(args.crop_pct, "--crop-pct")


def check_output(path: str, option: str, *, inputs: tuple[str | None, ...] = (), folder: bool = False) -> None:
    """Before any work: `path` (given with `option`) can be written: a file path (not a folder; `folder=True`:
    a folder) that is none of `inputs`, in a folder that exists or can be made and is writable."""
    from gpunet._io import destination_problem

    for given in inputs:
        if given and os.path.exists(path) and os.path.exists(given) and os.path.samefile(path, given):
            raise CLIError(f"{option} {path} is this command's input; write to another path (its input is never "
                           "replaced)")
    if problem := destination_problem(path, folder=folder):
        raise CLIError(f"{option} {path}: {problem}")


def add_weights_arguments(p: argparse.ArgumentParser, *, weights_help: str = WEIGHTS_HELP,
                          pretrained_help: str | None = None, random_help: str | None = None) -> None:
    """--weights | --pretrained | --random-weights (mutually exclusive)."""
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", "-w", metavar="PATH_OR_URL", help=weights_help)
    w.add_argument("--pretrained", action="store_true",
                   help=pretrained_help or "NVIDIA's NGC checkpoint (downloaded once into $GPUNET_HOME; "
                                           "$GPUNET_NGC_MIRROR overrides the source)")
    w.add_argument("--random-weights", action="store_true",
                   help=random_help or "allow an untrained model (smoke tests only: its outputs are meaningless)")


def add_model_arguments(p: argparse.ArgumentParser, *, default_model: str = DEFAULT_MODEL) -> None:
    """The model, weights, preprocessing and device options of predict and validate."""
    p.add_argument("--model", "-m", default=default_model,
                   help=f"zoo name (see `gpunet list`), NVIDIA-format JSON, gpunet .safetensors, or a file from "
                        f"`gpunet export`/`quantize` (.onnx, OpenVINO .xml: runs the deployed file) (default "
                        f"{default_model})")
    add_weights_arguments(p)
    p.add_argument("--img-size", type=int, help="input resolution (default: the model's)")
    p.add_argument("--crop-pct", type=float, help="center-crop fraction (default: the model's, 1.0 or 0.875)")
    p.add_argument("--batch-size", "-b", type=int, default=None,
                   help="images per forward pass (default 16 for predict, 64 for validate)")
    p.add_argument("--device", default="auto", help=DEVICE_HELP)
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"),
                   help="for an exported --model: what runs it (default: OpenVINO for .xml, ONNX Runtime for .onnx)")
