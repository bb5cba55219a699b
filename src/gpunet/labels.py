"""Class names: ImageNet-1k synsets and descriptions (shipped with timm), or names you supply.

A model's outputs have ids (`class_ids`: the class folder names it was trained on, recorded as
timm's `label_names`; ImageNet synsets for the 1000 ImageNet classes; else the index) and
display names (`class_names`: a labels file if given, else the ImageNet description of a
synset id, else the id itself; `class_<i>` when nothing is known).

`folder_targets` maps an ImageFolder's class folders to output indices, the same way for
training and evaluation: by name when the model's class names are known, else by ImageNet
index when every folder is a synset, else sorted and numbered 0..K-1.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from functools import lru_cache

from gpunet.errors import SettingError

IMAGENET_NUM_CLASSES = 1000
_SYNSET = re.compile(r"^n\d{8}$")


@lru_cache(maxsize=1)
def _info():  # type: ignore[no-untyped-def]
    from timm.data import ImageNetInfo

    return ImageNetInfo("imagenet-1k")


@lru_cache(maxsize=1)
def imagenet_synsets() -> tuple[str, ...]:
    """The 1000 WordNet ids in class-index order (`n01440764` is class 0)."""
    info = _info()
    return tuple(info.index_to_label_name(i) for i in range(IMAGENET_NUM_CLASSES))


@lru_cache(maxsize=1)
def imagenet_labels() -> tuple[str, ...]:
    """The 1000 human-readable descriptions in class-index order (`tench, Tinca tinca` is class 0)."""
    info = _info()
    return tuple(info.index_to_description(i) for i in range(IMAGENET_NUM_CLASSES))


@lru_cache(maxsize=1)
def synset_to_index() -> dict[str, int]:
    return {s: i for i, s in enumerate(imagenet_synsets())}


def is_synset(name: str) -> bool:
    """A WordNet id of one of the ImageNet-1k classes."""
    return bool(_SYNSET.match(name)) and name in synset_to_index()


def read_labels_file(path: str | os.PathLike[str]) -> list[str]:
    """One class name per line (blank lines at the end ignored); SettingError for a folder or a binary file."""
    text = os.fspath(path)
    if os.path.isdir(text):
        raise SettingError(f"{text}: is a folder; expected a text file with one class name per line")
    try:
        with open(text, encoding="utf-8") as f:
            names = [line.rstrip("\r\n") for line in f]
    except UnicodeDecodeError:
        raise SettingError(f"{text}: not a UTF-8 text file; expected one class name per line") from None
    while names and not names[-1].strip():
        names.pop()
    return names


def class_names(num_classes: int, labels: Sequence[str] | None = None, *,
                label_names: Sequence[str] | None = None) -> list[str]:
    """Display names for a model's outputs: `labels` if given, else from the model's `label_names` (an ImageNet
    synset shows its description), else ImageNet's for 1000 classes, else `class_<i>`."""
    if labels is not None:
        if len(labels) != num_classes:
            raise SettingError(f"labels (--labels): {len(labels)} class names given for a model with {num_classes} "
                               "classes (one name per output, in output order)")
        return list(labels)
    if label_names is not None:
        descriptions = imagenet_labels() if any(is_synset(n) for n in label_names) else ()
        return [descriptions[synset_to_index()[n]] if is_synset(n) else n for n in label_names]
    if num_classes == IMAGENET_NUM_CLASSES:
        return list(imagenet_labels())
    return [f"class_{i}" for i in range(num_classes)]


def class_ids(num_classes: int, label_names: Sequence[str] | None = None) -> list[str]:
    """Short ids for the outputs: the model's class names, else ImageNet synsets for 1000 classes, else the index."""
    if label_names is not None:
        return list(label_names)
    if num_classes == IMAGENET_NUM_CLASSES:
        return list(imagenet_synsets())
    return [str(i) for i in range(num_classes)]


def folder_targets(root: str, folders: Sequence[str], label_names: Sequence[str] | None = None) -> dict[str, int]:
    """Class folder -> output index: its position in `label_names` when given (a folder that is not one of them
    is a SettingError), else the ImageNet index when every folder is a synset, else sorted 0..K-1."""
    if label_names is not None:
        index = {name: i for i, name in enumerate(label_names)}
        unknown = [f for f in folders if f not in index]
        if unknown:
            shown = ", ".join(unknown[:5]) + (f", ... ({len(unknown) - 5} more)" if len(unknown) > 5 else "")
            raise SettingError(f"{root}: class folder(s) {shown} are not among the model's {len(label_names)} "
                               f"classes ({', '.join(label_names[:5])}{', ...' if len(label_names) > 5 else ''})")
        return {f: index[f] for f in folders}
    if folders and all(is_synset(f) for f in folders):
        return {f: synset_to_index()[f] for f in folders}
    return {f: i for i, f in enumerate(sorted(folders))}


def training_label_names(folders: Sequence[str], num_classes: int) -> list[str]:
    """The class names a model trained on these folders records: ImageNet's synsets for a 1000-class model on
    synset folders (so they keep their ImageNet indices), else the sorted folder names (padded with
    `class_<i>` when `num_classes` is larger)."""
    if num_classes == IMAGENET_NUM_CLASSES and folders and all(is_synset(f) for f in folders):
        return list(imagenet_synsets())
    names = sorted(folders)
    return names + [f"class_{i}" for i in range(len(names), num_classes)]
