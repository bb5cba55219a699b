"""The `gpunet` command: predict, validate, info, list, convert.

A thin layer over the Python API (`gpunet.Classifier`, `gpunet.validate`,
`gpunet.info`, `gpunet.convert`). Exit status: 0 success; 1 some inputs could not be
read (the others were still processed); 2 a usage or setup error (unknown model, missing or
unfit weights, failed download), reported as one `gpunet: error: ...` message, never a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import sys
import textwrap
from collections.abc import Sequence
from typing import Any

EXIT_OK, EXIT_DATA, EXIT_USAGE = 0, 1, 2
DEFAULT_MODEL = "gpunet_d1"


class CLIError(Exception):
    """A user error with a ready message and exit status."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _err(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _wrap(text: str, width: int = 100) -> str:
    return textwrap.fill(text, width=width, break_long_words=False, break_on_hyphens=False)


def _warn_random(model: str) -> None:
    _err(_wrap(f"gpunet: WARNING: --random-weights: {model} has untrained, random weights; its labels and "
               "accuracies are MEANINGLESS (smoke test only)."))


# ---------------------------------------------------------------------------- predict

def _model_args(p: argparse.ArgumentParser, *, default_model: str = DEFAULT_MODEL) -> None:
    p.add_argument("--model", "-m", default=default_model,
                   help=f"zoo name (see `gpunet list`), NVIDIA-format JSON, gpunet .safetensors, or a file from "
                        f"`gpunet export`/`quantize` (.onnx, OpenVINO .xml: runs the deployed file) (default "
                        f"{default_model})")
    w = p.add_mutually_exclusive_group()
    w.add_argument("--weights", "-w", metavar="PATH_OR_URL",
                   help="checkpoint: NGC zip, timm .pth.tar, state dict, .safetensors, or an http(s)/file URL")
    w.add_argument("--pretrained", action="store_true",
                   help="NVIDIA's NGC checkpoint (downloaded once into $GPUNET_HOME; $GPUNET_NGC_MIRROR overrides "
                        "the source)")
    w.add_argument("--random-weights", action="store_true",
                   help="allow an untrained model (smoke tests only: its outputs are meaningless)")
    p.add_argument("--img-size", type=int, help="input resolution (default: the model's)")
    p.add_argument("--crop-pct", type=float, help="center-crop fraction (default: the model's, 1.0 or 0.875)")
    p.add_argument("--batch-size", "-b", type=int, default=None)
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda or cuda:N")
    p.add_argument("--amp", action="store_true", help="mixed precision (fp16 on CUDA, bf16 on CPU)")
    p.add_argument("--channels-last", action="store_true", help="channels_last memory format")
    p.add_argument("--runtime", choices=("onnxruntime", "openvino"),
                   help="for an exported --model: what runs it (default: OpenVINO for .xml, ONNX Runtime for .onnx)")


def _progress() -> bool:
    return sys.stderr.isatty()


def cmd_predict(args: argparse.Namespace) -> int:
    from gpunet.classify import Classifier
    from gpunet.data import expand_inputs
    from gpunet.labels import read_labels_file

    paths, input_errors = expand_inputs(args.images)
    for e in input_errors:
        _err(f"gpunet: {e.source}: {e.message}")
    if not paths:
        raise CLIError("no images to classify" + (f" (checked: {', '.join(args.images)})" if args.images else ""),
                       EXIT_DATA)
    labels = read_labels_file(args.labels) if args.labels else None
    clf = Classifier(args.model, pretrained=args.pretrained, weights=args.weights, device=args.device, amp=args.amp,
                     channels_last=args.channels_last, batch_size=args.batch_size or 16, img_size=args.img_size,
                     crop_pct=args.crop_pct, labels=labels, workers=args.workers,
                     random_weights=args.random_weights, progress=_progress(), runtime=args.runtime)
    if args.random_weights:
        _warn_random(args.model)
    size = args.img_size or int(_cfg(clf.model)["input_size"][-1])
    engine = getattr(clf.model, "engine", None)  # an exported file: which runtime runs it
    weights_desc = ("RANDOM (meaningless)" if args.random_weights else
                    _pretrained_desc() if args.pretrained else engine or args.weights or args.model)
    _err(f"gpunet: {clf.name} ({weights_desc}) on {clf.device}{', amp' if args.amp else ''}, {size} px, "
         f"{len(paths)} image{'s' if len(paths) != 1 else ''}")
    fmt = args.format
    failures: list[tuple[str, str]] = [(e.source, e.message) for e in input_errors]
    results = []
    writer = None
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(["file", "rank", "index", "class_id", "label", "prob", "error"])
    elif fmt == "table" and args.random_weights:
        print("# RANDOM WEIGHTS (--random-weights): these labels are meaningless")
    for pred in clf.iter_predict(paths, args.top_k, progress=None):
        if pred.error is not None:
            failures.append((pred.source, pred.error))
        if fmt == "json":
            d = pred.to_dict()
            results.append({"file": d["source"], "error": d["error"], "topk": d["topk"]})
        elif fmt == "csv":
            assert writer is not None
            if pred.error is not None:
                writer.writerow([pred.source, "", "", "", "", "", pred.error])
            for r, t in enumerate(pred.topk, start=1):
                writer.writerow([pred.source, r, t.index, t.class_id, t.label, f"{t.prob:.6f}", ""])
        elif pred.error is None:
            print(pred.source)
            for r, t in enumerate(pred.topk, start=1):
                print(f"  {r:>2}  {100 * t.prob:6.2f}%  {t.class_id:>9}  {t.label}")
        sys.stdout.flush()
    if fmt == "json":
        json.dump({"model": clf.name, "weights": weights_desc, "img_size": size, "device": str(clf.device),
                   "amp": args.amp, "top_k": args.top_k, "results": results}, sys.stdout, indent=2)
        print()
    if failures:
        _err(f"gpunet: {len(failures)} of {len(paths) + len(input_errors)} inputs failed:")
        for source, message in failures:
            _err(f"  {source}: {message}")
        return EXIT_DATA
    return EXIT_OK


def _pretrained_desc() -> str:
    mirror = os.environ.get("GPUNET_NGC_MIRROR")
    return f"pretrained, NGC mirror {mirror}" if mirror else "pretrained, NGC"


def _cfg(model: Any) -> dict[str, Any]:
    from gpunet.transforms import preprocess_config

    return preprocess_config(model)


# ---------------------------------------------------------------------------- validate

def cmd_validate(args: argparse.Namespace) -> int:
    from gpunet.evaluate import append_results, validate

    if args.random_weights:
        _warn_random(args.model)
    result = validate(args.model, args.data_dir, weights=args.weights, pretrained=args.pretrained,
                      img_size=args.img_size, crop_pct=args.crop_pct, batch_size=args.batch_size or 64,
                      workers=args.workers, amp=args.amp, channels_last=args.channels_last, device=args.device,
                      limit=args.limit, progress=None, random_weights=args.random_weights, runtime=args.runtime)
    if args.format == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        print()
    else:
        classes = ("ImageNet-1k classes (synset folders)" if result.imagenet_classes
                   else f"{result.num_classes} classes (sorted folder names)")
        print(f"{result.model} on {result.data_dir}: {result.count} images, {classes}")
        print(f"  weights     {result.weights}")
        print(f"  preprocess  {result.img_size} px, crop_pct {result.crop_pct:g}, {result.interpolation}")
        print(f"  device      {result.device}{', amp' if result.amp else ''}"
              f"{', channels_last' if result.channels_last else ''}, batch {result.batch_size}")
        print(f"  top1        {result.top1:.3f} %")
        print(f"  top5        {result.top5:.3f} %")
        print(f"  loss        {result.loss:.4f}")
        print(f"  images/s    {result.images_per_s:.1f}")
    if args.results_file:
        append_results(args.results_file, result)
        _err(f"gpunet: results appended to {args.results_file}")
    if result.failed:
        _err(f"gpunet: {len(result.failed)} images could not be read (skipped, not counted):")
        for line in result.failed:
            _err(f"  {line}")
        return EXIT_DATA
    return EXIT_OK


# ---------------------------------------------------------------------------- info / list / convert

def cmd_info(args: argparse.Namespace) -> int:
    from gpunet.info import describe, describe_text

    info = describe(args.model, img_size=args.img_size)
    if args.json:
        json.dump(info, sys.stdout, indent=2)
        print()
    else:
        print(describe_text(info))
    return EXIT_OK


def cmd_list(args: argparse.Namespace) -> int:
    from gpunet.info import list_rows, list_table

    if args.json:
        json.dump(list_rows(), sys.stdout, indent=2)
        print()
    else:
        print(list_table())
    return EXIT_OK


def cmd_convert(args: argparse.Namespace) -> int:
    from gpunet.weights import convert

    layout = convert(args.src, args.dst, model=args.model, layout=args.layout)
    print(f"wrote {args.dst} ({layout})")
    return EXIT_OK


# ---------------------------------------------------------------------------- parser / main

def build_parser() -> argparse.ArgumentParser:
    from gpunet import __version__
    from gpunet.benchmark import add_benchmark_arguments, run_benchmark
    from gpunet.export import add_export_arguments, run_export
    from gpunet.quantize import add_quantize_arguments, run_quantize
    from gpunet.search import add_search_arguments, run_search
    from gpunet.train import add_train_arguments, run_from_args

    parser = argparse.ArgumentParser(
        prog="gpunet", description="NVIDIA's GPUNet image classifiers: classify images, measure accuracy, "
                                   "inspect, convert, train, export and benchmark models.")
    parser.add_argument("--version", action="version", version=f"gpunet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("predict", help="classify images (files, folders, globs)",
                       description="Classify images: files, folders (searched recursively) and glob patterns.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder or glob pattern")
    _model_args(p)
    p.add_argument("--top-k", "-k", type=int, default=5)
    p.add_argument("--format", "-f", choices=("table", "json", "csv"), default="table")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line (default: ImageNet-1k for 1000 "
                                                     "classes)")
    p.add_argument("--workers", "-j", type=int, default=None, help="image decoding threads")
    p.set_defaults(func=cmd_predict)

    v = sub.add_parser("validate", help="top-1/top-5 accuracy on an ImageFolder dataset",
                       description="Accuracy on DATA_DIR/<class>/<image>. ImageNet synset folder names "
                                   "(n01440764, ...) map to the 1000 ImageNet classes; other folder names are "
                                   "sorted and numbered, and need a checkpoint with that many classes.")
    v.add_argument("data_dir", metavar="DATA_DIR")
    _model_args(v)
    v.add_argument("--workers", "-j", type=int, default=2, help="data loader processes (default 2)")
    v.add_argument("--limit", type=int, help="evaluate N images, spread evenly over the dataset")
    v.add_argument("--results-file", metavar="FILE", help="append the result to FILE (.json list or .csv)")
    v.add_argument("--format", "-f", choices=("table", "json"), default="table")
    v.set_defaults(func=cmd_validate)

    i = sub.add_parser("info", help="layers, parameters, MACs and pretrained config of a model")
    i.add_argument("model", nargs="?", default=DEFAULT_MODEL, metavar="MODEL|JSON")
    i.add_argument("--img-size", type=int, help="resolution for output shapes and MACs (default: the model's)")
    i.add_argument("--json", action="store_true", help="machine-readable output")
    i.set_defaults(func=cmd_info)

    ls = sub.add_parser("list", help="the released models with resolution, params, MACs, top-1, latency")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_list)

    c = sub.add_parser("convert", help="convert a checkpoint (to .safetensors, or to NVIDIA's layout)",
                       description="DST ending in .safetensors: gpunet's format (architecture in the metadata); "
                                   "anything else: NVIDIA's layout, loadable by NVIDIA's code.")
    c.add_argument("src", metavar="SRC")
    c.add_argument("dst", metavar="DST")
    c.add_argument("--model", "-m", help="architecture (zoo name or JSON); inferred for released models")
    c.add_argument("--layout", choices=("timm", "raw_state_dict"), help="NVIDIA layout (default: the model's)")
    c.set_defaults(func=cmd_convert)

    # Commands whose arguments and runner live beside their API (train.py, export.py, ...).
    delegated = (
        ("train", "train or fine-tune (NVIDIA's recipes, distillation, torchrun)",
         "Train a GPUNet on an ImageFolder dataset with timm's machinery; `--recipe NAME --print-config` shows "
         "NVIDIA's settings for a model. Multi-process: torchrun --nproc-per-node N -m gpunet train ...",
         add_train_arguments, run_from_args),
        ("export", "export to ONNX, TorchScript, a Triton repository or a TensorRT engine",
         "Export a GPUNet (BatchNorm folded) and check it against PyTorch: ONNX is run in ONNX Runtime and the "
         "max abs difference printed.",
         add_export_arguments, run_export),
        ("quantize", "INT8 ONNX (ONNX Runtime static quantization, calibrated on images)",
         "Static INT8 quantization (QDQ, per-channel weights) calibrated on a folder of images; with --val, "
         "reports the top-1 difference and the speed-up vs fp32.",
         add_quantize_arguments, run_quantize),
        ("benchmark", "latency/throughput of backends, batch sizes and precisions",
         "Measure GPUNets (and timm peers) on this machine: median/p90/p99 latency, images/s, GFLOP/s and its "
         "share of a matmul peak measured in the same run. Writes JSON, CSV and PNG plots.",
         add_benchmark_arguments, run_benchmark),
        ("search", "architecture search: GPUNets on the latency/accuracy Pareto front",
         "Search GPUNet architectures (NSGA-II, candidates trained as Ray tasks) for the best accuracy on DIR "
         "under a latency budget measured on this device. Writes candidates.jsonl, front.csv, front/*.json, "
         "search_plot.png and a summary.",
         add_search_arguments, run_search),
    )
    for name, help_text, description, add_arguments, run in delegated:
        command = sub.add_parser(name, help=help_text, description=description)
        add_arguments(command)
        command.set_defaults(func=run)
    return parser


def _download_paragraph(args: argparse.Namespace, exc: Exception) -> str:
    """One paragraph: what failed, where NVIDIA's weights come from, how to supply them offline."""
    from gpunet.zoo import get_pretrained_config

    try:
        cfg = get_pretrained_config(getattr(args, "model", DEFAULT_MODEL))
    except ValueError:
        return f"gpunet: error: {exc}"
    reason = str(exc).split(f"{cfg.display_name} weights come from NGC")[0].strip()
    source = "" if cfg.url in reason else f" ({cfg.url})"
    return _wrap(
        f"gpunet: error: {reason} {cfg.display_name}'s weights are NVIDIA's, published on NGC under NVIDIA's "
        f"terms{source}. To use them without network access, download that zip on another machine and pass "
        f"it with --weights PATH (or --weights URL), or set GPUNET_NGC_MIRROR to a folder or http(s) URL that "
        f"holds it under the name {cfg.filename}. Nothing was classified: gpunet never falls back to random "
        f"weights.")


def main(argv: Sequence[str] | None = None) -> int:
    from gpunet.arch import ArchitectureError
    from gpunet.classify import RandomWeightsError
    from gpunet.hub import DownloadError
    from gpunet.weights import WeightsError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        return int(args.func(args))
    except RandomWeightsError:
        _err(_wrap(f"gpunet: error: no weights given for {args.model}: with random weights its labels would be "
                   "meaningless. Use --pretrained (NVIDIA's NGC checkpoint, downloaded once), --weights PATH (a "
                   "local checkpoint or URL), or --random-weights for a smoke test."))
        return EXIT_USAGE
    except CLIError as exc:
        _err(f"gpunet: error: {exc}")
        return exc.code
    except DownloadError as exc:
        _err(_download_paragraph(args, exc) if getattr(args, "pretrained", False) else f"gpunet: error: {exc}")
        return EXIT_USAGE
    except (WeightsError, ArchitectureError, FileNotFoundError, NotADirectoryError, ValueError) as exc:
        _err(f"gpunet: error: {exc}")
        return EXIT_USAGE
    except KeyboardInterrupt:
        _err("gpunet: interrupted")
        return 130
    except BrokenPipeError:  # e.g. `gpunet predict ... | head`
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        return EXIT_OK
    finally:
        root.removeHandler(handler)


if __name__ == "__main__":
    raise SystemExit(main())
