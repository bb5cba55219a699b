"""Knowledge distillation: building the teacher and the distillation loss (NVIDIA's recipe).

NVIDIA's GPUNet-P0/P1/D1/D2 were trained against a frozen EfficientNet teacher: the batch
is loaded at the teacher's resolution, the teacher sees it as is, the student sees it
bicubic-downsampled to its own resolution, and the loss is the label loss plus the
soft-target cross-entropy against the teacher's softmax (temperature 1, weight 1).
"""

from __future__ import annotations

import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from gpunet.errors import TeacherError


def is_gpunet_teacher(name: str) -> bool:
    """A GPUNet (zoo name, JSON, .safetensors, any existing file) rather than a timm model name."""
    from gpunet.zoo import list_models

    return name in list_models() or name.endswith((".json", ".safetensors")) or os.path.isfile(name)


def build_teacher(name: str, num_classes: int, *, checkpoint: str | None = None, weights: str | None = None,
                  pretrained: bool = False, random_weights: bool = False) -> FrozenTeacher:
    """A frozen teacher in eval mode: a timm model name (weights from `checkpoint` or timm's hub with
    `pretrained`) or a GPUNet name/JSON (weights from `weights`, or NGC with `pretrained`)."""
    if is_gpunet_teacher(name):
        from gpunet.zoo import create_model

        w = weights or checkpoint
        if w is None and not pretrained and not random_weights:
            raise TeacherError(f"teacher {name!r} has no weights: pass --teacher-weights FILE (or "
                               "--teacher-pretrained for a released GPUNet)")
        teacher = create_model(name, pretrained=pretrained and w is None, weights=w, num_classes=num_classes)
    else:
        import timm

        if checkpoint is None and not pretrained and not random_weights:
            raise TeacherError(f"teacher {name!r} has no weights: pass --teacher-checkpoint FILE (a timm "
                               "checkpoint of this model), or --teacher-pretrained to download timm's weights")
        try:
            teacher = timm.create_model(name, pretrained=pretrained and checkpoint is None, num_classes=num_classes)
        except RuntimeError as exc:  # unknown model name
            raise TeacherError(f"teacher {name!r}: {exc}") from None
        if checkpoint is not None:
            from timm.models import load_checkpoint

            try:
                load_checkpoint(teacher, checkpoint, use_ema=True)
            except (RuntimeError, KeyError, OSError) as exc:
                raise TeacherError(f"--teacher-checkpoint {checkpoint}: does not load into {name} "
                                   f"({str(exc).splitlines()[0][:300]})") from None
    return freeze(teacher)


class FrozenTeacher(nn.Module):
    """A teacher that stays in eval mode (its `train()` keeps it there) and takes no gradients.

    A student's training loop can call `train()` on everything it owns; the teacher's
    BatchNorm statistics and dropout stay as in inference.
    """

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module
        for p in module.parameters():
            p.requires_grad_(False)
        self.train(False)

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Eval mode whatever `mode` says: a frozen teacher never trains."""
        return super().train(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)


def freeze(teacher: nn.Module) -> FrozenTeacher:
    """`teacher` in eval mode for good, no parameter taking gradients (already frozen: as is)."""
    return teacher if isinstance(teacher, FrozenTeacher) else FrozenTeacher(teacher)


def teacher_data_config(teacher: nn.Module, img_size: int | None) -> dict[str, Any]:
    """Input size and eval crop of the teacher (its own default when `img_size` is None)."""
    if isinstance(teacher, FrozenTeacher):
        teacher = teacher.module
    cfg = dict(getattr(teacher, "pretrained_cfg", None) or {})
    size = img_size or (cfg.get("input_size") or (3, 224, 224))[-1]
    if hasattr(teacher, "arch") and not cfg:
        size = img_size or teacher.arch.img_resolution  # type: ignore[union-attr]
    return {"img_size": int(size), "crop_pct": float(cfg.get("crop_pct") or 1.0)}


def resize_for_student(x: torch.Tensor, size: int) -> torch.Tensor:
    """The teacher-size batch bicubic-downsampled (or upsampled) to the student's size, as NVIDIA does."""
    if x.shape[-1] == size and x.shape[-2] == size:
        return x
    return F.interpolate(x, size=(size, size), mode="bicubic", align_corners=False)


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft-target cross-entropy against softmax(teacher / T), times T^2 (Hinton); T = 1 is NVIDIA's loss."""
    t = float(temperature)
    soft = F.softmax(teacher_logits.float() / t, dim=-1)
    loss = torch.sum(-soft * F.log_softmax(student_logits.float() / t, dim=-1), dim=-1).mean()
    return loss * (t * t)
