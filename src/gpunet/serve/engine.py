"""The model side of a serving replica: `gpunet predict`'s `Classifier`, built from a `ServeConfig`.

Images are decoded and preprocessed one by one (`prepare`, with the Classifier's own transform,
in the HTTP replicas) and classified in batches (`Engine.classify`, in the model replicas): a
batch goes through `Classifier.predict` as preprocessed tensors, so a served image gets the same
logits, probabilities and labels as `gpunet predict` on the same file.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from PIL import Image

from gpunet._version import __version__
from gpunet.classify import Classifier
from gpunet.errors import SettingError
from gpunet.serve.config import ServeConfig
from gpunet.serve.inputs import Upload, decode_image

Item = tuple[torch.Tensor, int]  # one preprocessed image and how many classes its client asked for
Transform = Callable[[Image.Image], torch.Tensor]


def prepare(upload: Upload, transform: Transform, max_pixels: int) -> torch.Tensor:
    """Decode one image (with the pixel limit) and preprocess it -> (3, H, W); `RequestError` if unfit."""
    return transform(decode_image(upload, max_pixels))


def _runtime(config: ServeConfig) -> str | None:
    """The Classifier's `runtime`: None for PyTorch (a refused combination is an error naming the setting)."""
    from gpunet.deploy.runtime import is_exported

    if config.runtime == "torch":
        if is_exported(config.model):
            raise SettingError(f"runtime torch: {config.model} is an exported file; run it with onnxruntime or "
                               "openvino (or serve the model name/JSON/.safetensors with PyTorch)")
        return None
    return config.runtime


class Engine:
    """A loaded classifier with the server's limits: `prepare` an upload, `classify` a batch, `info` for clients.

    `device` overrides the config's (a Ray replica sees its GPU as "cuda"). Loading refuses
    exactly what `gpunet predict` refuses (random weights without `random_weights=True`, a
    checkpoint that does not fit, a runtime that does not apply).
    """

    def __init__(self, config: ServeConfig, *, device: str | None = None, progress: bool = False) -> None:
        self.config = config
        self.classifier = Classifier(
            config.model, pretrained=config.pretrained, weights=config.weights, device=device or config.device,
            amp=config.amp, img_size=config.img_size, labels=config.labels, workers=1,
            batch_size=config.max_batch_size, random_weights=config.random_weights, progress=progress,
            runtime=_runtime(config))

    @property
    def transform(self) -> Transform:
        """The Classifier's preprocessing (picklable: the HTTP replicas run it before sending tensors here)."""
        return self.classifier.transform

    def prepare(self, upload: Upload) -> torch.Tensor:
        """`prepare(upload, self.transform, max_pixels)`."""
        return prepare(upload, self.transform, self.config.max_pixels)

    def classify(self, items: Sequence[Item]) -> list[list[dict[str, Any]]]:
        """Top-k (rank, index, class_id, label, prob) of each item, all in one forward pass."""
        k = max(top_k for _, top_k in items)
        predictions = self.classifier.predict([t for t, _ in items], top_k=k, batch_size=len(items))
        return [p.to_dict()["topk"][:top_k] for p, (_, top_k) in zip(predictions, items, strict=True)]

    def info(self) -> dict[str, Any]:
        """What `GET /v1/model` reports: the model, its input, classes, runtime, precision and the server's limits."""
        from gpunet.device import amp_dtype
        from gpunet.transforms import preprocess_config

        clf, cfg = self.classifier, self.config
        pre = preprocess_config(clf.model)
        size = cfg.img_size or int(pre["input_size"][-1])
        exported = getattr(clf.model, "runtime", None) is not None
        precision = (str(clf.model.precision) if exported else
                     f"{str(amp_dtype(clf.device)).removeprefix('torch.')} autocast" if cfg.amp else "fp32")
        weights = ("random (meaningless outputs)" if clf.random_weights else "pretrained (NVIDIA NGC)"
                   if cfg.pretrained else os.path.basename(cfg.weights or cfg.model))
        return {
            "name": clf.name, "weights": weights, "gpunet_version": __version__,
            "runtime": clf.model.runtime if exported else "torch", "precision": precision,
            "device": str(clf.device), "input_size": [3, size, size],
            "preprocess": {"crop_pct": pre["crop_pct"], "interpolation": pre["interpolation"],
                           "mean": list(pre["mean"]), "std": list(pre["std"])},
            "num_classes": clf.num_classes, "labels": list(clf.labels),
            "limits": {"top_k": cfg.top_k, "max_batch_size": cfg.max_batch_size, "batch_wait_ms": cfg.batch_wait_ms,
                       "max_bytes": cfg.max_bytes, "max_pixels": cfg.max_pixels, "max_images": cfg.max_images},
        }
