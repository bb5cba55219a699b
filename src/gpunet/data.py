"""Finding and reading images: CLI arguments -> image paths, safe decoding, an ImageFolder dataset.

* `expand_inputs` turns files, folders (searched recursively) and glob patterns into a
  sorted, de-duplicated list of paths. Folders and globs keep only `IMAGE_EXTENSIONS`;
  a file named explicitly is always kept (and reported if it is not an image).
* `load_image` decodes fully (truncated files fail here, not later) and converts to
  upright RGB with `gpunet.to_rgb`; it returns an error message instead of raising.
* `ImageFolder`: `root/<class>/**/<image>`. When every class folder is an ImageNet-1k
  WordNet id (`n01440764`, ...), targets are the ImageNet class indices (0..999), so a
  subset of ImageNet's validation folders is scored by the 1000-class model. Otherwise
  classes are the sorted folder names, numbered 0..K-1 (a K-class checkpoint is needed).
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image, UnidentifiedImageError

from gpunet.labels import is_synset, synset_to_index
from gpunet.transforms import to_rgb

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff",
                              ".webp", ".ppm", ".pgm", ".pbm", ".pnm"})
_GLOB_CHARS = set("*?[")


def is_image_path(path: str | os.PathLike[str]) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in IMAGE_EXTENSIONS


def _walk_images(folder: str) -> list[str]:
    found: list[str] = []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        found.extend(os.path.join(dirpath, f) for f in sorted(filenames)
                     if not f.startswith(".") and is_image_path(f))
    return found


@dataclass(frozen=True)
class InputError:
    """An input argument that named no readable image."""

    source: str
    message: str


def expand_inputs(items: Iterable[str | os.PathLike[str]]) -> tuple[list[str], list[InputError]]:
    """Files, folders (recursive) and globs -> (image paths in argument order, arguments that matched nothing)."""
    paths: list[str] = []
    errors: list[InputError] = []
    seen: set[str] = set()

    def add(p: str) -> None:
        key = os.path.normpath(os.path.abspath(p))
        if key not in seen:
            seen.add(key)
            paths.append(p)

    for item in items:
        text = os.fspath(item)
        if os.path.isdir(text):
            found = _walk_images(text)
            if not found:
                errors.append(InputError(text, f"no images ({', '.join(sorted(IMAGE_EXTENSIONS))}) in this folder"))
            for p in found:
                add(p)
        elif os.path.isfile(text):
            add(text)
        elif _GLOB_CHARS & set(text):
            matched: list[str] = []
            for m in sorted(glob.glob(text, recursive=True)):
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


def load_image(path: str | os.PathLike[str]) -> tuple[Image.Image | None, str | None]:
    """Decode an image file to upright RGB -> (image, None), or (None, what went wrong)."""
    try:
        with Image.open(path) as im:
            im.load()
            return to_rgb(im), None
    except FileNotFoundError:
        return None, "file not found"
    except UnidentifiedImageError:
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
        index = synset_to_index() if self.imagenet else {c: i for i, c in enumerate(classes)}
        self.class_to_idx = {c: index[c] for c in classes}
        self.num_classes = 1000 if self.imagenet else len(classes)
        samples = [(p, self.class_to_idx[c]) for c in classes for p in files[c]]
        self.total = len(samples)
        if limit is not None and 0 < limit < len(samples):
            # evenly spaced, so every class keeps its share
            samples = [samples[(i * len(samples)) // limit] for i in range(limit)]
        self.samples = samples
        self.transform = transform

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
