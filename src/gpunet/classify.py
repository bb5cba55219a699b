"""`Classifier`: a GPUNet loaded once with its weights and preprocessing; top-k labels for images.

    clf = gpunet.Classifier("gpunet_d1", pretrained=True)
    for p in clf.predict(["cat.jpg", pil_image]):
        print(p.source, p.label, p.prob)

Inputs may be file paths, image URLs (http, https, file: fetched within the download deadlines
of `gpunet.hub`, at most `gpunet.limits.IMAGE_URL_MAX_BYTES`, never cached), PIL images (any
mode; converted like `gpunet.to_rgb`), the bytes of an image file (what an upload or
`open(f, "rb").read()` gives), uint8 numpy arrays in RGB order ((H, W), (H, W, 3), (H, W, 4), or
a (N, H, W, 3) stack; OpenCV's arrays are BGR: convert them with `img[..., ::-1]` first) or
tensors. Tensors are taken as *already preprocessed* model inputs: (3, H, W) or (N, 3, H, W),
normalised like `gpunet.eval_transform(model)` produces. An input that cannot be read gives a
`Prediction` with `error` set instead of stopping the others; something that is no kind of
input at all (a number) is a `SettingError`.

Labels are the class names the weights record (a `gpunet train` checkpoint's class folders,
or an exported file's), else ImageNet's for 1000 classes; `labels=` overrides them. Settings
out of range (top_k, batch_size, workers, img_size, crop_pct) are a `SettingError` at once.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Union

import numpy as np
import torch
from PIL import Image
from torch import nn

from gpunet._checks import check_count, check_fraction
from gpunet.data import load_image
from gpunet.device import autocast, resolve_device
from gpunet.errors import RandomWeightsError, SettingError
from gpunet.hub import is_url
from gpunet.labels import class_ids, class_names
from gpunet.limits import check_image_size
from gpunet.records import file_kind, label_names_of, set_label_names
from gpunet.transforms import eval_transform, to_rgb

ImageInput = Union[str, "os.PathLike[str]", Image.Image, bytes, np.ndarray, torch.Tensor]
_SINGLE = (str, os.PathLike, Image.Image, bytes, bytearray, memoryview)  # one input, though some are iterable
_KINDS = "image paths or URLs, PIL images, image file bytes, uint8 numpy arrays or preprocessed tensors"
MODEL_SOURCES = ("a zoo name (`gpunet list`), an NVIDIA-format architecture JSON, a gpunet .safetensors file or an "
                 "exported .onnx/.xml file")


@dataclass(frozen=True)
class TopK:
    """One of the top-k classes: index into the model's outputs, its id (ImageNet synset), name, probability."""

    index: int
    label: str
    prob: float
    class_id: str = ""


@dataclass(frozen=True)
class Prediction:
    """The top-k classes for one input, or why it could not be classified."""

    source: str
    topk: list[TopK] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def _top(self) -> TopK:
        if self.error is not None:
            raise ValueError(f"{self.source}: {self.error}")
        return self.topk[0]

    @property
    def index(self) -> int:
        return self._top().index

    @property
    def label(self) -> str:
        return self._top().label

    @property
    def prob(self) -> float:
        return self._top().prob

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "error": self.error,
                "topk": [{"rank": r, "index": t.index, "class_id": t.class_id, "label": t.label, "prob": t.prob}
                         for r, t in enumerate(self.topk, start=1)]}


# ---------------------------------------------------------------------------- model loading

def check_preprocess(img_size: int | None = None, crop_pct: float | None = None, *, img_size_setting: str = "img_size",
                     crop_pct_setting: str = "crop_pct") -> None:
    """SettingError for an input size outside gpunet.arch's limits or a crop fraction outside (0, 1]."""
    if img_size is not None:
        check_image_size(img_size, setting=img_size_setting)
    if crop_pct is not None:
        check_fraction(crop_pct, crop_pct_setting)


def check_model_source(model: str | os.PathLike[str]) -> None:
    """SettingError naming what an existing file is when it cannot describe a model (a TorchScript module, a
    checkpoint: not an architecture); other names are left to the architecture reader."""
    from gpunet.deploy.runtime import is_exported
    from gpunet.zoo import list_models

    text = os.fspath(model)
    if text in list_models() or text.endswith((".json", ".safetensors")) or is_exported(text):
        return
    kind = file_kind(text)
    if kind is None:
        return
    hint = (": pass it with --weights (weights=) and name its architecture with --model, e.g. a `gpunet train` "
            "run's architecture.json" if kind == "a PyTorch checkpoint" else "")
    raise SettingError(f"{text} is {kind}; expected {MODEL_SOURCES}{hint}")


def load_model(model: str | os.PathLike[str] | nn.Module = "gpunet_d1", *,
               weights: str | os.PathLike[str] | None = None, pretrained: bool = False,
               num_classes: int | None = None, random_weights: bool = False, progress: bool = True,
               runtime: str | None = None) -> nn.Module:
    """A GPUNet ready for inference, refusing anything that would classify with untrained weights.

    Without `num_classes` the class count follows the checkpoint (a 10-class checkpoint gives a
    10-class model). With `num_classes`, a checkpoint with another count is an error (never a
    silently fresh classifier). `random_weights=True` allows an untrained model (smoke tests).
    An exported file (.onnx, OpenVINO .xml) gives a `gpunet.deploy.runtime.ExportedModel` run by
    `runtime` (default: by file type). The class names the weights record become the model's
    `pretrained_cfg["label_names"]`.
    """
    from gpunet.deploy.runtime import ExportedModel, is_exported
    from gpunet.weights import WeightsError, resolve_weights_path
    from gpunet.zoo import create_model

    if isinstance(model, nn.Module):
        return model.eval()
    check_model_source(model)
    if is_exported(model):
        if weights is not None or pretrained or random_weights:
            raise SettingError(f"{os.fspath(model)} is an exported model with its own weights; --weights, "
                               "--pretrained and --random-weights apply to a model name or JSON only")
        exported = ExportedModel(model, runtime=runtime)
        if num_classes is not None and exported.num_classes != num_classes:
            raise WeightsError(f"{os.fspath(model)} classifies {exported.num_classes} classes but {num_classes} "
                               "are needed")
        return set_label_names(exported, _exported_label_names(model)).eval()
    if runtime is not None:
        raise SettingError(f"runtime={runtime!r} applies to exported files (.onnx, .xml), not to {os.fspath(model)}")
    own_weights = os.fspath(model).endswith(".safetensors")
    if weights is None and not pretrained and not own_weights and not random_weights:
        raise RandomWeightsError(
            f"no weights for {os.fspath(model)}: a model with random weights gives meaningless labels. Pass "
            "pretrained=True (--pretrained) for NVIDIA's NGC checkpoint, weights=PATH (--weights PATH) for a "
            "local checkpoint, or random_weights=True (--random-weights) for a smoke test")
    untrained = weights is None and not pretrained and not own_weights
    path = resolve_weights_path(weights, progress) if weights is not None else None
    net = create_model(model, pretrained=pretrained, weights=path, progress=progress,  # classes follow the file
                       num_classes=num_classes if untrained else None)
    if num_classes is not None and getattr(net, "num_classes", num_classes) != num_classes:
        raise WeightsError(f"{weights or model} has a classifier for {net.num_classes} classes but {num_classes} "
                           "are needed; classifying with a freshly initialised classifier would be meaningless")
    return net.eval()


def _exported_label_names(path: str | os.PathLike[str]) -> list[str] | None:
    """The class names (ids) an exported file records, if any."""
    from gpunet.deploy.metadata import META_LABEL_NAMES, read_metadata

    names = read_metadata(path).get(META_LABEL_NAMES)
    return [str(n) for n in names] if isinstance(names, list) else None


def _source_name(item: Any, i: int) -> str:
    if isinstance(item, (str, os.PathLike)):
        return os.fspath(item)
    if isinstance(item, Image.Image):
        return getattr(item, "filename", "") or f"<image {i}>"
    if isinstance(item, (bytes, bytearray, memoryview)):
        return f"<bytes {i}>"
    if isinstance(item, np.ndarray):
        return f"<array {i}>"
    return f"<tensor {i}>" if isinstance(item, torch.Tensor) else f"<{type(item).__name__} {i}>"


def _fetch_image(url: str) -> tuple[Image.Image | None, str | None]:
    """The image at `url` (within the download deadlines and IMAGE_URL_MAX_BYTES), or (None, why not)."""
    from gpunet.errors import DownloadError
    from gpunet.hub import fetch
    from gpunet.limits import IMAGE_URL_MAX_BYTES

    try:
        data = fetch(url, max_bytes=IMAGE_URL_MAX_BYTES)
    except DownloadError as exc:
        return None, str(exc).removeprefix(f"{url}: ")  # the prediction already names the URL
    return load_image(io.BytesIO(data))


def _array_image(array: np.ndarray) -> tuple[Image.Image | None, str | None]:
    """A uint8 (H, W), (H, W, 1|3|4) RGB(A) array as an RGB image, or (None, what is wrong with it)."""
    shape = tuple(array.shape)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and shape[2] in (1, 3, 4))):
        return None, (f"expected a uint8 numpy image (H, W), (H, W, 3) or (H, W, 4) in RGB order, got {array.dtype} "
                      f"{shape} (scale floats to 0-255 and cast to uint8, or pass a preprocessed tensor)")
    if array.ndim == 3 and shape[2] == 1:
        array = array[..., 0]
    return to_rgb(Image.fromarray(np.ascontiguousarray(array))), None


class Classifier:
    """A GPUNet with its weights, evaluation transform, device and precision, built once."""

    def __init__(self, model: str | os.PathLike[str] | nn.Module = "gpunet_d1", *, pretrained: bool = False,
                 weights: str | os.PathLike[str] | None = None, device: str | torch.device | None = "auto",
                 amp: bool = False, channels_last: bool = False, batch_size: int = 16, img_size: int | None = None,
                 crop_pct: float | None = None, labels: Sequence[str] | None = None, workers: int | None = None,
                 random_weights: bool = False, progress: bool = True, runtime: str | None = None) -> None:
        from gpunet.deploy.runtime import check_options

        self.batch_size = check_count(batch_size, "batch_size")
        self.workers = min(4, os.cpu_count() or 1) if workers is None else check_count(workers, "workers", minimum=0)
        check_preprocess(img_size, crop_pct)
        self.device = resolve_device(device)
        self.model = load_model(model, weights=weights, pretrained=pretrained, random_weights=random_weights,
                                progress=progress, runtime=runtime)
        check_options(self.model, img_size=img_size, amp=amp, channels_last=channels_last)
        if labels is None:
            labels = getattr(self.model, "labels", None)  # an exported file's own class names
        self.random_weights = random_weights and weights is None and not pretrained
        self.amp = amp
        self.channels_last = channels_last
        self.transform = eval_transform(self.model, img_size=img_size, crop_pct=crop_pct)
        self.num_classes = int(getattr(self.model, "num_classes", 0) or 0)
        names = label_names_of(self.model)
        self.labels = class_names(self.num_classes, list(labels) if labels is not None else None, label_names=names)
        self.class_ids = class_ids(self.num_classes, names)
        self.model.to(self.device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    @property
    def name(self) -> str:
        cfg = getattr(self.model, "pretrained_cfg", None) or {}
        return str(cfg.get("name") or "custom")

    # ------------------------------------------------------------------ core
    @torch.no_grad()
    def logits(self, batch: torch.Tensor) -> torch.Tensor:
        """Raw float32 logits of an already-preprocessed (N, 3, H, W) batch."""
        x = batch.to(self.device, non_blocking=True)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(self.device, self.amp):
            out = self.model(x)
        return out.float()

    def _topk(self, logits: torch.Tensor, k: int) -> list[list[TopK]]:
        probs = logits.softmax(dim=1)
        k = min(k, probs.shape[1])
        values, indices = probs.topk(k, dim=1)
        return [[TopK(int(i), self.labels[int(i)], float(v), self.class_ids[int(i)])
                 for v, i in zip(vs, ix, strict=True)]
                for vs, ix in zip(values.cpu(), indices.cpu(), strict=True)]

    def _prepare(self, item: Any) -> tuple[torch.Tensor | None, str | None]:
        """One input -> (preprocessed (3, H, W) tensor, None) or (None, error)."""
        if isinstance(item, torch.Tensor):
            if item.dim() != 3 or item.shape[0] != 3:
                return None, f"expected a preprocessed (3, H, W) tensor, got shape {tuple(item.shape)}"
            return item.float(), None
        if isinstance(item, Image.Image):
            try:
                return self.transform(to_rgb(item)), None
            except (OSError, ValueError) as exc:
                return None, f"cannot convert image: {exc}"
        if isinstance(item, np.ndarray):
            image, error = _array_image(item)
        elif isinstance(item, (bytes, bytearray, memoryview)):
            image, error = load_image(io.BytesIO(item))
        elif isinstance(item, str) and is_url(item):
            image, error = _fetch_image(item)
        elif isinstance(item, (str, os.PathLike)):
            image, error = load_image(item)
        else:
            return None, f"unsupported input {type(item).__name__}: expected {_KINDS}"
        if image is None:
            return None, error
        return self.transform(image), None

    # ------------------------------------------------------------------ public
    def predict(self, inputs: ImageInput | Iterable[ImageInput], top_k: int = 5, *, batch_size: int | None = None,
                progress: bool | None = False) -> list[Prediction]:
        """Top-k predictions for one input or many, in input order (see the module docstring)."""
        return list(self.iter_predict(inputs, top_k, batch_size=batch_size, progress=progress))

    __call__ = predict

    def iter_predict(self, inputs: ImageInput | Iterable[ImageInput], top_k: int = 5, *,
                     batch_size: int | None = None, progress: bool | None = False) -> Iterator[Prediction]:
        """Like `predict`, yielding results batch by batch (for long lists)."""
        check_count(top_k, "top_k")
        bs = self.batch_size if batch_size is None else check_count(batch_size, "batch_size")
        items = _as_items(inputs)
        n_batches = (len(items) + bs - 1) // bs
        from tqdm.auto import tqdm

        disable = True if (progress is False or n_batches <= 1) else (None if progress is None else False)
        chunks = [items[i:i + bs] for i in range(0, len(items), bs)]
        with ThreadPoolExecutor(max_workers=max(1, self.workers)) as pool, tqdm(
                total=len(items), unit="img", desc=f"{self.name}", disable=disable, file=sys.stderr,
                leave=False) as bar:
            # decode the next batch while the model runs on this one; at most two batches in memory
            pending = [pool.submit(self._prepare, item) for item in chunks[0]] if chunks else []
            for c, chunk in enumerate(chunks):
                ready = [f.result() for f in pending]
                pending = [pool.submit(self._prepare, item) for item in chunks[c + 1]] if c + 1 < len(chunks) else []
                good = [j for j, (t, _) in enumerate(ready) if t is not None]
                results: dict[int, list[TopK]] = {}
                if good:
                    batch = torch.stack([ready[j][0] for j in good])  # type: ignore[misc]
                    for j, top in zip(good, self._topk(self.logits(batch), top_k), strict=True):
                        results[j] = top
                for j, item in enumerate(chunk):
                    src = _source_name(item, c * bs + j)
                    if j in results:
                        yield Prediction(src, results[j])
                    else:
                        yield Prediction(src, [], ready[j][1])
                bar.update(len(chunk))


def _as_items(inputs: Any) -> list[Any]:
    """One input or many as a list; a 4-D array or tensor is a batch."""
    if isinstance(inputs, _SINGLE):
        return [inputs]
    if isinstance(inputs, (torch.Tensor, np.ndarray)):
        return list(inputs) if inputs.ndim == 4 else [inputs]
    if not isinstance(inputs, Iterable):
        raise SettingError(f"inputs: expected {_KINDS} (one, or an iterable of them), got {type(inputs).__name__}")
    return list(inputs)
