"""`gpunet predict`: top-k classes of images (files, folders, globs) as a table, JSON or CSV."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from typing import Any

from gpunet.cli.common import (
    EXIT_DATA,
    EXIT_OK,
    CLIError,
    add_model_arguments,
    check_options,
    err,
    pretrained_desc,
    progress,
    warn_random,
)


def register(sub: Any) -> None:
    p = sub.add_parser("predict", help="classify images (files, folders, globs)",
                       description="Classify images: files, folders (searched recursively) and glob patterns.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image file, folder, glob pattern or http(s)/file URL")
    add_model_arguments(p)
    p.add_argument("--top-k", "-k", type=int, default=5, help="classes to show per image (default 5)")
    p.add_argument("--format", "-f", choices=("table", "json", "csv"), default="table",
                   help="table (default): for reading; json: the settings and a record per image; csv: a row per "
                        "image and rank")
    p.add_argument("--labels", metavar="FILE", help="class names, one per line in output order (default: the names "
                                                     "the weights record, else ImageNet-1k's for 1000 classes)")
    p.add_argument("--workers", "-j", type=int, default=None, help="image decoding threads")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from gpunet.classify import Classifier
    from gpunet.data import expand_inputs
    from gpunet.labels import read_labels_file
    from gpunet.transforms import preprocess_config

    check_options(args)
    labels = read_labels_file(args.labels) if args.labels else None
    paths, input_errors = expand_inputs(args.images)
    for e in input_errors:
        err(f"gpunet: {e.source}: {e.message}")
    if not paths:
        raise CLIError("no images to classify" + (f" (checked: {', '.join(args.images)})" if args.images else ""),
                       EXIT_DATA)
    clf = Classifier(args.model, pretrained=args.pretrained, weights=args.weights, device=args.device, amp=args.amp,
                     channels_last=args.channels_last, batch_size=args.batch_size or 16, img_size=args.img_size,
                     crop_pct=args.crop_pct, labels=labels, workers=args.workers,
                     random_weights=args.random_weights, progress=progress(), runtime=args.runtime)
    if args.random_weights:
        warn_random(args.model)
    size = args.img_size or int(preprocess_config(clf.model)["input_size"][-1])
    engine = getattr(clf.model, "engine", None)  # an exported file: which runtime runs it
    weights_desc = ("RANDOM (meaningless)" if args.random_weights else
                    pretrained_desc() if args.pretrained else engine or args.weights or args.model)
    err(f"gpunet: {clf.name} ({weights_desc}) on {clf.device}{', amp' if args.amp else ''}, {size} px, "
        f"{len(paths)} image{'s' if len(paths) != 1 else ''}")
    failures: list[tuple[str, str]] = [(e.source, e.message) for e in input_errors]
    results = _print_predictions(clf, paths, args, failures)
    if args.format == "json":
        json.dump({"model": clf.name, "weights": weights_desc, "img_size": size, "device": str(clf.device),
                   "amp": args.amp, "top_k": args.top_k, "results": results}, sys.stdout, indent=2)
        print()
    if failures:
        err(f"gpunet: {len(failures)} of {len(paths) + len(input_errors)} inputs failed:")
        for source, message in failures:
            err(f"  {source}: {message}")
        return EXIT_DATA
    return EXIT_OK


def _print_predictions(clf: Any, paths: list[str], args: argparse.Namespace,
                       failures: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Print table/CSV rows as predictions arrive; collect JSON results; record failures."""
    fmt = args.format
    results: list[dict[str, Any]] = []
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
        elif writer is not None:
            if pred.error is not None:
                writer.writerow([pred.source, "", "", "", "", "", pred.error])
            for r, t in enumerate(pred.topk, start=1):
                writer.writerow([pred.source, r, t.index, t.class_id, t.label, f"{t.prob:.6f}", ""])
        elif pred.error is None:
            print(pred.source)
            for r, t in enumerate(pred.topk, start=1):
                print(f"  {r:>2}  {100 * t.prob:6.2f}%  {t.class_id:>9}  {t.label}")
        sys.stdout.flush()
    return results
