"""Class names: ImageNet-1k synsets and descriptions (shipped with timm), or names you supply.

`class_names(n)` gives the 1000 ImageNet descriptions for a 1000-class model and
`class_<i>` otherwise, unless a labels file (one name per line) is given.
"""

from __future__ import annotations

import os
import re
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
    """One class name per line (blank lines at the end ignored)."""
    with open(path, encoding="utf-8") as f:
        names = [line.rstrip("\r\n") for line in f]
    while names and not names[-1].strip():
        names.pop()
    return names


def class_names(num_classes: int, labels: list[str] | tuple[str, ...] | None = None) -> list[str]:
    """Names for a model's outputs: given `labels`, else ImageNet for 1000 classes, else `class_<i>`."""
    if labels is not None:
        if len(labels) != num_classes:
            raise SettingError(f"{len(labels)} class names given for a model with {num_classes} classes")
        return list(labels)
    if num_classes == IMAGENET_NUM_CLASSES:
        return list(imagenet_labels())
    return [f"class_{i}" for i in range(num_classes)]


def class_ids(num_classes: int) -> list[str]:
    """Short ids for the outputs: ImageNet synsets for 1000 classes, else the index as text."""
    if num_classes == IMAGENET_NUM_CLASSES:
        return list(imagenet_synsets())
    return [str(i) for i in range(num_classes)]
