"""Accuracy on an ImageFolder dataset (top-1, top-5, loss, throughput), like timm's validate.py.

    result = gpunet.validate("gpunet_d1", "imagenet/val", pretrained=True)
    gpunet.append_results("results.csv", result)

Unreadable images are skipped, listed in `result.failed`, and not counted.

Class folders are numbered as the model's outputs: by the class names its weights record (a
`gpunet train` checkpoint's class folders) or that `labels=` gives, else ImageNet synset
folders by their ImageNet index, else sorted 0..K-1 (see `gpunet.labels.folder_targets`).
`append_results` is safe under concurrency: appends are serialised by a lock file beside the
results file (`filelock`) and each one replaces the file atomically.
"""

from __future__ import annotations

import csv
import io
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpunet._checks import check_count
from gpunet._io import atomic_write_bytes
from gpunet.classify import check_preprocess, load_model
from gpunet.data import ImageFolder, collate
from gpunet.device import autocast, resolve_device, synchronize
from gpunet.errors import SettingError, WeightsError
from gpunet.labels import IMAGENET_NUM_CLASSES
from gpunet.metrics import correct_topk
from gpunet.records import label_names_of
from gpunet.transforms import eval_transform, preprocess_config


@dataclass
class ValidationResult:
    """What `validate` measured. Accuracies are percentages; loss is the mean cross-entropy."""

    model: str
    top1: float
    top5: float
    loss: float
    count: int
    images_per_s: float
    img_size: int
    crop_pct: float
    interpolation: str
    num_classes: int
    data_dir: str
    weights: str
    batch_size: int
    device: str
    amp: bool
    channels_last: bool
    imagenet_classes: bool  # the folders were numbered by their ImageNet index (synsets)
    failed: list[str] = field(default_factory=list)
    time: str = ""
    classes_by_name: bool = False  # the folders were numbered by the model's class names

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self) -> dict[str, Any]:
        """Flat form for CSV: the failed files become a count."""
        d = self.to_dict()
        d["failed"] = len(self.failed)
        return d


@dataclass
class _Tally:
    """Running sums of one validation pass."""

    count: int = 0
    correct1: int = 0
    correct5: int = 0
    loss_sum: float = 0.0
    failed: list[str] = field(default_factory=list)
    seconds: float = 0.0


def validate(model: str | os.PathLike[str] | nn.Module, data_dir: str | os.PathLike[str], *,
             weights: str | os.PathLike[str] | None = None, pretrained: bool = False, img_size: int | None = None,
             crop_pct: float | None = None, batch_size: int = 64, workers: int = 2, amp: bool = False,
             channels_last: bool = False, device: str | torch.device | None = "auto", limit: int | None = None,
             progress: bool | None = None, random_weights: bool = False, runtime: str | None = None,
             labels: list[str] | None = None) -> ValidationResult:
    """Evaluate a GPUNet on `data_dir` (ImageFolder layout: `data_dir/<class>/<image>`).

    Class folders are numbered as the model was trained: by the class names its weights record
    (or `labels`, the model's class names in output order), else ImageNet synset folders
    (`n01440764`, ...) by their ImageNet index, else sorted and numbered (the checkpoint must then
    have that many classes). `limit` evaluates N images spread evenly over the dataset. `model`
    may be an exported file (.onnx, OpenVINO .xml; see `gpunet.deploy.runtime`), run by `runtime`.
    """
    from gpunet.deploy.runtime import check_options

    check_count(batch_size, "batch_size")
    check_count(workers, "workers", minimum=0)
    check_preprocess(img_size, crop_pct)
    dev = resolve_device(device)
    # the dataset first: a wrong folder fails fast, before a large checkpoint is read
    dataset = ImageFolder(data_dir, limit=limit)
    if isinstance(model, nn.Module):
        net = model.eval()
    else:
        net = load_model(model, weights=weights, pretrained=pretrained,
                         num_classes=dataset.num_classes if random_weights and labels is None else None,
                         random_weights=random_weights, progress=bool(sys.stderr.isatty()), runtime=runtime)
    check_options(net, img_size=img_size, amp=amp, channels_last=channels_last)
    source = "the model" if isinstance(model, nn.Module) else os.fspath(weights or model)
    model_classes = number_classes(dataset, net, labels, source)
    cfg = preprocess_config(net)
    size = img_size or int(cfg["input_size"][-1])
    pct = crop_pct or float(cfg["crop_pct"])
    dataset.transform = eval_transform(net, img_size=size, crop_pct=pct)
    net.to(dev)
    if channels_last:
        net.to(memory_format=torch.channels_last)
    tally = _evaluate(net, dataset, dev, batch_size=batch_size, workers=workers, amp=amp,
                      channels_last=channels_last, progress=progress)
    name = (getattr(net, "pretrained_cfg", None) or {}).get("name") or (
        os.fspath(model) if not isinstance(model, nn.Module) else "custom")
    count = tally.count
    return ValidationResult(
        model=str(name), top1=100.0 * tally.correct1 / count, top5=100.0 * tally.correct5 / count,
        loss=tally.loss_sum / count, count=count,
        images_per_s=count / tally.seconds if tally.seconds > 0 else float("inf"), img_size=size, crop_pct=pct,
        interpolation=str(cfg["interpolation"]), num_classes=model_classes, data_dir=dataset.root,
        weights=_weights_description(model, net, weights, pretrained, random_weights), batch_size=batch_size,
        device=str(dev), amp=amp, channels_last=channels_last,
        imagenet_classes=dataset.imagenet and not dataset.by_name, failed=tally.failed,
        time=time.strftime("%Y-%m-%dT%H:%M:%S"), classes_by_name=dataset.by_name)


def number_classes(dataset: ImageFolder, net: nn.Module, labels: list[str] | None, source: str) -> int:
    """Number `dataset`'s classes as `net`'s outputs (see `validate`); the model's class count.

    SettingError (WeightsError for a class count that does not fit) when the folders cannot be matched to the
    outputs.
    """
    model_classes = int(getattr(net, "num_classes", 0) or 0)
    names = labels if labels is not None else label_names_of(net)
    if names is not None:
        if len(names) != model_classes:
            raise SettingError(f"labels (--labels): {len(names)} class names given for a model with {model_classes} "
                               "classes (one name per output, in output order)")
        dataset.map_classes(names)
    elif dataset.imagenet and model_classes != IMAGENET_NUM_CLASSES:
        raise SettingError(f"{dataset.root}: the class folders are ImageNet synsets, but {source} has "
                           f"{model_classes} classes (1000 needed) and records no class names; pass the class "
                           "folder names it was trained on, in output order, with --labels FILE (labels=)")
    elif not dataset.imagenet and model_classes != dataset.num_classes:
        raise WeightsError(f"{source} classifies {model_classes} classes but {dataset.num_classes} are needed (one "
                           f"per class folder of {dataset.root}, sorted); a checkpoint of `gpunet train` records "
                           "its class names, or pass them in output order with --labels FILE")
    return model_classes


def _evaluate(net: nn.Module, dataset: ImageFolder, dev: torch.device, *, batch_size: int, workers: int, amp: bool,
              channels_last: bool, progress: bool | None) -> _Tally:
    """One pass over `dataset`: top-1/top-5 hits, summed loss, unreadable files, wall time."""
    from tqdm.auto import tqdm

    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                                         collate_fn=collate, pin_memory=dev.type == "cuda",
                                         persistent_workers=False)
    disable = True if (progress is False or len(loader) <= 1) else (None if progress is None else False)
    tally = _Tally()
    start = time.perf_counter()
    with torch.no_grad(), tqdm(total=len(dataset), unit="img", desc="validate", disable=disable,
                               file=sys.stderr, leave=False) as bar:
        for batch in loader:
            tally.failed += [f"{dataset.samples[index][0]}: {message}" for index, message in batch["errors"]]
            if batch["input"] is not None:
                _score(net, batch, dev, amp, channels_last, tally)
                if not bar.disable:
                    bar.set_postfix(top1=f"{100.0 * tally.correct1 / tally.count:.2f}", refresh=False)
            bar.update(len(batch["index"]) + len(batch["errors"]))
    synchronize(dev)
    tally.seconds = time.perf_counter() - start
    if tally.count == 0:
        raise SettingError(f"{dataset.root}: none of the {len(dataset)} images could be read: "
                           + "; ".join(tally.failed[:3]))
    return tally


def _score(net: nn.Module, batch: dict[str, Any], dev: torch.device, amp: bool, channels_last: bool,
           tally: _Tally) -> None:
    """Add one batch's hits and loss to `tally`."""
    x = batch["input"].to(dev, non_blocking=True)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    target = batch["target"].to(dev)
    with autocast(dev, amp):
        logits = net(x).float()
    tally.loss_sum += float(F.cross_entropy(logits, target, reduction="sum"))
    c1, c5 = correct_topk(logits, target, (1, 5))
    tally.correct1 += c1
    tally.correct5 += c5
    tally.count += int(target.numel())


def _weights_description(model: Any, net: nn.Module, weights: Any, pretrained: bool, random_weights: bool) -> str:
    """Where the evaluated weights came from, for the report."""
    describe = getattr(net, "describe", None)  # an exported file says which runtime ran it
    if callable(describe):
        return str(describe())
    if pretrained and weights is None:
        mirror = os.environ.get("GPUNET_NGC_MIRROR")
        return f"pretrained, NGC mirror {mirror}" if mirror else "pretrained, NGC"
    if weights is not None:
        return os.fspath(weights)
    if isinstance(model, (str, os.PathLike)) and os.fspath(model).endswith(".safetensors"):
        return os.fspath(model)
    return "random" if random_weights else "in-memory model"


def append_results(path: str | os.PathLike[str], result: ValidationResult | dict[str, Any], *,
                   lock_timeout: float = 60.0) -> None:
    """Append one result to a `.json` list or a CSV table (header written once), atomically.

    A CSV whose columns differ from the new row's is rewritten with the union of columns.
    Concurrent appends (several processes, one file) are serialised by the lock file
    `<path>.lock`, so none is lost; a lock held longer than `lock_timeout` s is a SettingError.
    """
    from filelock import FileLock, Timeout

    path = os.fspath(path)
    if os.path.isdir(path):
        raise SettingError(f"{path}: is a folder; expected a results file (.json or .csv)")
    lock = FileLock(path + ".lock", timeout=lock_timeout)
    try:
        with lock:
            _append(path, result)
    except Timeout:
        raise SettingError(f"{path}: another process has held its lock file {lock.lock_file} for over "
                           f"{lock_timeout:g} s; if none is writing, delete the lock file") from None


def _append(path: str, result: ValidationResult | dict[str, Any]) -> None:
    """The read-modify-replace of `append_results` (under its lock)."""
    row = result.row() if isinstance(result, ValidationResult) else dict(result)
    if path.lower().endswith(".json"):
        rows: list[Any] = []
        if os.path.exists(path) and os.path.getsize(path) > 0:
            with open(path, encoding="utf-8") as f:
                try:
                    rows = json.load(f)
                except json.JSONDecodeError as exc:
                    raise SettingError(f"{path}: exists but is not valid JSON ({exc}); not overwriting it") from None
            if not isinstance(rows, list):
                raise SettingError(f"{path}: exists but is not a JSON list; not overwriting it")
        full = result.to_dict() if isinstance(result, ValidationResult) else row
        rows.append(full)
        atomic_write_bytes(path, (json.dumps(rows, indent=2) + "\n").encode())
        return
    old_rows: list[dict[str, Any]] = []
    fields = list(row)
    if os.path.exists(path) and os.path.getsize(path) > 0:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            old_fields = list(reader.fieldnames or [])
            old_rows = list(reader)
        fields = old_fields + [k for k in row if k not in old_fields]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(old_rows)
    writer.writerow(row)
    atomic_write_bytes(path, out.getvalue().encode())
