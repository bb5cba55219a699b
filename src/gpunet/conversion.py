"""Converting checkpoints between NVIDIA's layouts and ours (`gpunet convert`)."""

from __future__ import annotations

import os
from collections.abc import Mapping

import torch
from safetensors import SafetensorError

from gpunet import weights as W
from gpunet._io import destination_problem
from gpunet.arch import Architecture, loads_json
from gpunet.errors import SettingError, WeightsError
from gpunet.records import Records, read_records, set_label_names
from gpunet.zoo import create_model, get_pretrained_config, guess_model, resolve_architecture


def convert(src: str | os.PathLike[str], dst: str | os.PathLike[str], model: str | os.PathLike[str] | None = None,
            *, layout: str | None = None) -> str:
    """Convert a checkpoint: `.safetensors` destination -> our format, else NVIDIA's layout.

    `model` names the architecture (zoo name or JSON); it may be omitted for our own
    .safetensors, for `gpunet train` checkpoints (they record it) and for NVIDIA checkpoints
    of a released model (recognised by shape). The class names a checkpoint records travel
    with the model. `dst` must be a file path other than `src`. Returns the layout written.
    """
    src_path = W.resolve_weights_path(src)
    check_destination(src_path, os.fspath(dst))
    state_dict, _ = W.read_checkpoint(src_path)
    records = read_records(src_path)
    arch, name = resolve_architecture(model if model is not None else _infer_architecture(src_path, state_dict,
                                                                                          records))
    net = create_model(arch, num_classes=W.checkpoint_num_classes(state_dict, arch), progress=False)
    W.load_state_dict(net, state_dict, src_path, name=name, recognise=guess_model)
    set_label_names(net, records.label_names)
    if layout is None:
        layout = get_pretrained_config(name).checkpoint_format if name else "timm"
    safetensors = os.fspath(dst).endswith(".safetensors")
    try:
        if safetensors:
            W.save_safetensors_checkpoint(net, dst)
        else:
            W.save_nvidia_checkpoint(net, dst, layout)
    except (RuntimeError, SafetensorError) as exc:  # what torch.save / safetensors raise for a failed write
        detail = (str(exc).splitlines() or [type(exc).__name__])[0][:200]
        raise WeightsError(f"{os.fspath(dst)}: writing failed ({detail}): is the disk full or a file size limit "
                           "reached? Nothing was replaced") from None
    return "gpunet-safetensors" if safetensors else f"nvidia-{layout}"


def check_destination(src: str, dst: str) -> None:
    """SettingError for a destination that is a folder or the source file itself (checked before any work)."""
    if os.path.isdir(dst):
        raise SettingError(f"{dst}: is a folder; expected the path of the checkpoint file to write (.safetensors "
                           "for gpunet's format, e.g. .pth.tar for NVIDIA's layout)")
    if os.path.exists(dst) and os.path.exists(src) and os.path.samefile(src, dst):
        raise SettingError(f"{dst} is the checkpoint being converted; write the conversion to another file "
                           "(converting never replaces its input)")
    if problem := destination_problem(dst):
        raise SettingError(f"{dst}: {problem}")


def _infer_architecture(path: str, state_dict: Mapping[str, torch.Tensor], records: Records) -> Architecture | str:
    """The architecture recorded in our files (.safetensors, `gpunet train` checkpoints), else the released model
    the tensors belong to."""
    if records.architecture is not None:
        return loads_json(records.architecture, source=f"{path} (recorded architecture)")
    guess = guess_model(state_dict)
    if guess is None:
        raise WeightsError(f"{path}: not a checkpoint of a released GPUNet and records no architecture; name its "
                           "architecture (a JSON file) with --model")
    return guess
