"""Converting checkpoints between NVIDIA's layouts and ours (`gpunet convert`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch

from gpunet import weights as W
from gpunet.arch import Architecture
from gpunet.errors import WeightsError
from gpunet.zoo import create_model, get_pretrained_config, guess_model, resolve_architecture


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], model: str | os.PathLike[str] | None = None,
            *, layout: str | None = None) -> str:
    """Convert a checkpoint: `.safetensors` destination -> our format, else NVIDIA's layout.

    `model` names the architecture (zoo name or JSON); it may be omitted for our own
    .safetensors and for NVIDIA checkpoints of a released model (recognised by shape).
    Returns the layout written.
    """
    src_path = W.resolve_weights_path(src)
    state_dict, metadata = W.read_checkpoint(src_path)
    arch, name = resolve_architecture(model if model is not None else
                                      _infer_architecture(src_path, state_dict, metadata))
    net = create_model(arch, num_classes=W.checkpoint_num_classes(state_dict, arch), progress=False)
    W.load_state_dict(net, state_dict, src_path, name=name, recognise=guess_model)
    if os.fspath(dst).endswith(".safetensors"):
        W.save_safetensors_checkpoint(net, dst)
        return "gpunet-safetensors"
    if layout is None:
        layout = get_pretrained_config(name).checkpoint_format if name else "timm"
    W.save_nvidia_checkpoint(net, dst, layout)
    return f"nvidia-{layout}"


def _infer_architecture(path: str, state_dict: Mapping[str, torch.Tensor],
                        metadata: Mapping[str, str]) -> Architecture | str:
    """The architecture recorded in our files, else the released model the tensors belong to."""
    if W.SAFETENSORS_ARCH_KEY in metadata:
        return W.read_safetensors_architecture(path)
    guess = guess_model(state_dict)
    if guess is None:
        raise WeightsError(f"{path}: not a checkpoint of a released GPUNet; name its architecture "
                           "(a JSON file) with --model")
    return guess
