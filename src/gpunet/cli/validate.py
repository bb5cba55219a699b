"""`gpunet validate`: top-1/top-5 accuracy of a model (or an exported file) on an ImageFolder dataset."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from gpunet.cli.common import EXIT_DATA, EXIT_OK, add_model_arguments, check_options, check_output, err, warn_random


def register(sub: Any) -> None:
    v = sub.add_parser("validate", help="top-1/top-5 accuracy on an ImageFolder dataset",
                       description="Accuracy on DATA_DIR/<class>/<image>. Class folders are matched to the "
                                   "model's outputs by the class names its weights record (a `gpunet train` "
                                   "checkpoint) or --labels gives; else ImageNet synset folder names (n01440764, "
                                   "...) map to the 1000 ImageNet classes, and other folder names are sorted and "
                                   "numbered (a checkpoint with that many classes is needed).")
    v.add_argument("data_dir", metavar="DATA_DIR")
    add_model_arguments(v)
    v.add_argument("--workers", "-j", type=int, default=2, help="data loader processes (default 2)")
    v.add_argument("--limit", type=int, help="evaluate N images, spread evenly over the dataset")
    v.add_argument("--results-file", metavar="FILE",
                   help="append the result to FILE (.json list or .csv; safe with concurrent runs)")
    v.add_argument("--labels", metavar="FILE",
                   help="the model's class names (its training class folders), one per line in output order, "
                        "for weights that record none")
    v.add_argument("--format", "-f", choices=("table", "json"), default="table",
                   help="table (default) or json (the result as one object)")
    v.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet._checks import naming_errors
    from gpunet.evaluate import append_results, validate
    from gpunet.labels import read_labels_file

    check_options(args)
    if args.results_file:
        check_output(args.results_file, "--results-file")
    labels = read_labels_file(args.labels) if args.labels else None
    if args.random_weights:
        warn_random(args.model)
    result = validate(args.model, args.data_dir, weights=args.weights, pretrained=args.pretrained,
                      img_size=args.img_size, crop_pct=args.crop_pct, batch_size=args.batch_size or 64,
                      workers=args.workers, amp=args.amp, channels_last=args.channels_last, device=args.device,
                      limit=args.limit, progress=None, random_weights=args.random_weights, runtime=args.runtime,
                      labels=labels)
    if args.format == "json":
        json.dump(result.to_dict(), sys.stdout, indent=2)
        print()
    else:
        print(_table(result))
    if args.results_file:
        with naming_errors(args.results_file):
            append_results(args.results_file, result)
        err(f"gpunet: results appended to {args.results_file}")
    if result.failed:
        err(f"gpunet: {len(result.failed)} images could not be read (skipped, not counted):")
        for line in result.failed:
            err(f"  {line}")
        return EXIT_DATA
    return EXIT_OK


def _table(result: Any) -> str:
    classes = ("ImageNet-1k classes (synset folders)" if result.imagenet_classes
               else f"{result.num_classes} classes (the model's class names)" if result.classes_by_name
               else f"{result.num_classes} classes (sorted folder names)")
    return "\n".join([
        f"{result.model} on {result.data_dir}: {result.count} images, {classes}",
        f"  weights     {result.weights}",
        f"  preprocess  {result.img_size} px, crop_pct {result.crop_pct:g}, {result.interpolation}",
        f"  device      {result.device}{', amp' if result.amp else ''}"
        f"{', channels_last' if result.channels_last else ''}, batch {result.batch_size}",
        f"  top1        {result.top1:.3f} %",
        f"  top5        {result.top5:.3f} %",
        f"  loss        {result.loss:.4f}",
        f"  images/s    {result.images_per_s:.1f}",
    ])
