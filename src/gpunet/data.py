"""Finding and reading images: CLI arguments -> image paths, safe decoding, an ImageFolder dataset.

* `expand_inputs` turns files, folders (searched recursively) and glob patterns into a
  sorted, de-duplicated list of paths (a file reached through several links once). Folders
  and globs keep only `IMAGE_EXTENSIONS`; a file named explicitly is always kept (and
  reported if it is not an image). Folders (and `**`) follow directory links but enter each
  real directory once, so a link to itself or a parent cannot loop or multiply files.
* `load_image` decodes fully (truncated files fail here, not later) and converts to
  upright RGB with `gpunet.to_rgb`; it returns an error message instead of raising.
* `ImageFolder`: `root/<class>/**/<image>`. When every class folder is an ImageNet-1k
  WordNet id (`n01440764`, ...), targets are the ImageNet class indices (0..999), so a
  subset of ImageNet's validation folders is scored by the 1000-class model. Otherwise
  classes are the sorted folder names, numbered 0..K-1 (a K-class checkpoint is needed).
  `map_classes(label_names)` numbers them as a model's outputs instead (the class names a
  `gpunet train` checkpoint records), whatever the folder names are.
"""

from __future__ import annotations

import fnmatch
import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import IO, Any

import torch
from PIL import Image, UnidentifiedImageError

from gpunet._checks import check_count
from gpunet.hub import is_url
from gpunet.labels import IMAGENET_NUM_CLASSES, folder_targets, is_synset
from gpunet.transforms import to_rgb

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})
_GLOB_CHARS = set("*?[")


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _walk(folder: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """`os.walk(folder)` in sorted order without hidden entries, following directory links but entering
    each real directory (device and inode) once: a link to itself or a parent ends there instead of looping."""
    seen = {_identity(folder)}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        kept = []
        for d in sorted(dirnames):
            identity = _identity(os.path.join(dirpath, d))
            if not d.startswith(".") and identity is not None and identity not in seen:
                seen.add(identity)
                kept.append(d)
        dirnames[:] = kept
        yield dirpath, kept, sorted(f for f in filenames if not f.startswith("."))


def _identity(path: str) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:  # a broken link or a link loop
        return None
    return st.st_dev, st.st_ino


def _walk_images(folder: str) -> list[str]:
    return [os.path.join(d, f) for d, _, files in _walk(folder) for f in files if is_image_path(f)]


def _glob(pattern: str) -> list[str]:
    """`glob.glob(pattern, recursive=True)`, sorted, but a `**` component walks with `_walk` (Python's
    `**` follows directory links without end: two links to `.` never finish)."""
    parts = pattern.rstrip("/").split("/")
    if "**" not in parts:
        return sorted(glob.glob(pattern))  # one directory level per component: finite
    k = parts.index("**")
    base = "/".join(parts[:k]) or ("/" if pattern.startswith("/") else "")
    bases = glob.glob(base) if glob.has_magic(base) else [base]
    found = []
    for root in (b for b in bases if os.path.isdir(b or ".")):
        for dirpath, dirnames, filenames in _walk(root or "."):
            rel = os.path.relpath(dirpath, root or ".")
            for name in dirnames + filenames:
                path = os.path.normpath(os.path.join(rel, name))
                if _match(path.split("/"), parts[k:]):
                    found.append(os.path.join(root, path))
        if root and _match([], parts[k:]):  # `**` also matches no folder at all
            found.append(root)
    return sorted(found)


def _match(names: list[str], patterns: list[str]) -> bool:
    """Whether path components `names` match glob components `patterns` (`**`: any number of components)."""
    if not patterns:
        return not names
    if patterns[0] == "**":
        return any(_match(names[i:], patterns[1:]) for i in range(len(names) + 1))
    return bool(names) and fnmatch.fnmatchcase(names[0], patterns[0]) and _match(names[1:], patterns[1:])


@dataclass(frozen=True)
class InputError:
    """An input argument that named no readable image."""

    source: str
    message: str


def expand_inputs(items: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[InputError]]:
    """Files, folders (recursive), globs and image URLs -> (images in argument order, arguments that matched
    nothing). URLs (http, https, file) are passed on as they are: they are fetched when classified."""
    paths: list[str] = []
    errors: list[InputError] = []
    seen: set[str] = set()

    def add(p: str, key: str | None = None) -> None:
        key = key or os.path.realpath(p)  # one file reached through several links is listed once
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for item in items:
        text = os.fspath(item)
        if is_url(text):
            add(text, key=text)
        elif os.path.isdir(text):
            found = _walk_images(text)
            if not found:
                errors.append(InputError(text, f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder"))
            for p in found:
                add(p)
        elif os.path.isfile(text):
            add(text)
        elif _GLOB_CHARS & set(text):
            matched: list[str] = []
            for m in _glob(text):
                if os.path.isdir(m):
                    matched.extend(_walk_images(m))
                elif os.path.isfile(m) and is_image_path(m):
                    matched.append(m)
            if not matched:
                errors.append(InputError(text, "no image files match this pattern"))
            for p in matched:
                add(p)
        else:
            errors.append(InputError(text, "no such file or folder"))
    return paths, errors


def load_image(path: str | os.PathLike[str] | IO[bytes]) -> tuple[Image.Image | None, str | None]:
    """Decode an image file (a path or a binary file object) to upright RGB -> (image, None), or (None, what went
    wrong)."""
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im), None
    except FileNotFoundError:
        return None, "file not found"
    except UnidentifiedImageError:
        if isinstance(path, (str, os.PathLike)) and os.path.getsize(path) == 0:
            return None, "empty file (0 bytes)"
        return None, "not an image file (or a format Pillow cannot read)"
    except Image.DecompressionBombError as exc:
        return None, f"refused: {exc}"
    except (OSError, SyntaxError, ValueError, EOFError, TypeError) as exc:
        text = str(exc) or type(exc).__name__
        if "truncated" in text.lower():
            text = f"corrupt or truncated image ({text})"
        return None, text


class ImageFolder(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """`root/<class>/<images>` with ImageNet synset folders mapped to the 1000 ImageNet indices.

    Items are `(tensor, target, index, error)`: an unreadable image gives a zero tensor and
    its error message, so a loader never dies on one bad file (`collate` drops such items).
    """

    def __init__(self, root: str | os.PathLike[str], transform: Callable[[Image.Image], torch.Tensor] | None = None,
                 *, limit: int | None = None) -> None:
        self.root = os.fspath(root)
        if not os.path.isdir(self.root):
            raise FileNotFoundError(f"{self.root}: no such folder (expected an ImageFolder: ROOT/<class>/<image>)")
        classes = sorted(e.name for e in os.scandir(self.root) if e.is_dir() and not e.name.startswith("."))
        files = {c: _walk_images(os.path.join(self.root, c)) for c in classes}
        classes = [c for c in classes if files[c]]
        if not classes:
            raise FileNotFoundError(
                f"{self.root}: no class folders with images (expected ROOT/<class>/<image> with extensions "
                f"{', '.join(sorted(IMAGE_EXTENSIONS))})")
        self.classes = classes
        self.imagenet = all(is_synset(c) for c in classes)
        self.class_to_idx = folder_targets(self.root, classes)
        self.num_classes = IMAGENET_NUM_CLASSES if self.imagenet else len(classes)
        self.by_name = False  # numbered by a model's class names (`map_classes`)
        samples = [(p, self.class_to_idx[c]) for c in classes for p in files[c]]
        self.total = len(samples)
        if limit is not None and check_count(limit, "limit") < len(samples):
            # evenly spaced, so every class keeps its share
            samples = [samples[(i * len(samples)) // limit] for i in range(limit)]
        self.samples = samples
        self.transform = transform

    def map_classes(self, label_names: Sequence[str]) -> None:
        """Number the classes as a model's outputs are (its class names: the mapping it was trained with)."""
        mapping = folder_targets(self.root, self.classes, label_names)
        by_target = {self.class_to_idx[c]: mapping[c] for c in self.classes}
        self.samples = [(p, by_target[t]) for p, t in self.samples]
        self.class_to_idx = mapping
        self.num_classes = len(label_names)
        self.by_name = True

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int, int, str | None]:
        path, target = self.samples[i]
        image, error = load_image(path)
        if image is None:
            return torch.zeros(0), target, i, error
        tensor = self.transform(image) if self.transform else torch.as_tensor(0)
        return tensor, target, i, None


def collate(batch: Sequence[tuple[torch.Tensor, int, int, str | None]]) -> dict[str, Any]:
    """Stack the readable items; list the unreadable ones as (dataset index, message)."""
    good = [b for b in batch if b[3] is None]
    return {
        "input": torch.stack([b[0] for b in good]) if good else None,
        "target": torch.tensor([b[1] for b in good], dtype=torch.long),
        "index": [b[2] for b in good],
        "errors": [(b[2], b[3]) for b in batch if b[3] is not None],
    }
