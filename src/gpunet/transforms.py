"""Preprocessing bound to the weights: NVIDIA's evaluation transform for each model.

Resize the shorter side to floor(R / crop_pct) (bicubic), center-crop R x R, scale to
[0, 1], normalise with the ImageNet mean/std. Images of any PIL mode are first converted
to RGB (`to_rgb`), with EXIF orientation applied.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from PIL import Image, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

_INTERPOLATION = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR,
                  "nearest": InterpolationMode.NEAREST}


def to_rgb(image: Image.Image) -> Image.Image:
    """Any PIL image -> upright RGB. Transparency is composited over white; 16/32-bit
    grayscale is scaled to 8 bits by its full range (not clipped)."""
    image = ImageOps.exif_transpose(image) or image
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        import numpy as np

        a = np.asarray(image, dtype=np.float64)
        lo, hi = float(a.min()), float(a.max())
        scaled = np.zeros_like(a) if hi == lo else (a - lo) * (255.0 / (hi - lo))
        return Image.fromarray(scaled.round().astype("uint8"), "L").convert("RGB")
    if image.mode == "P" and "transparency" in image.info:
        image = image.convert("RGBA")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def eval_transform(model_or_name: Any = "gpunet_d1", *, img_size: int | None = None,
                   crop_pct: float | None = None) -> Callable[[Image.Image], torch.Tensor]:
    """The exact evaluation transform for a zoo name, a model (its pretrained config) or an architecture."""
    cfg = preprocess_config(model_or_name)
    size = img_size or cfg["input_size"][-1]
    pct = crop_pct or cfg["crop_pct"]
    return T.Compose([
        T.Lambda(to_rgb),
        T.Resize(math.floor(size / pct), interpolation=_INTERPOLATION[cfg["interpolation"]]),
        T.CenterCrop(size),
        T.ToTensor(),
        T.Normalize(cfg["mean"], cfg["std"]),
    ])


def preprocess_config(model_or_name: Any) -> dict[str, Any]:
    """input_size, crop_pct, interpolation, mean, std of a model's weights (zoo config, else eval defaults)."""
    from gpunet.zoo import IMAGENET_MEAN, IMAGENET_STD, get_pretrained_config, resolve_architecture

    cfg = getattr(model_or_name, "pretrained_cfg", None)
    if cfg:
        return cfg
    arch_source = getattr(model_or_name, "arch", model_or_name)
    arch, name = resolve_architecture(arch_source)
    if name is not None:
        return get_pretrained_config(name).to_dict()
    res = arch.img_resolution
    return {"input_size": (3, res, res), "crop_pct": 1.0, "interpolation": "bicubic", "mean": IMAGENET_MEAN,
            "std": IMAGENET_STD}
