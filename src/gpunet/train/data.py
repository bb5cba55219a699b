"""Training data whose augmentation is reproducible per sample, so a resumed run sees the same batches.

Each sample's random transform depends only on (seed, epoch, index): it runs under RNGs
forked from that triple, in whichever worker process loads it.
"""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from gpunet.errors import TrainError


def load_rgb(path: str) -> Any:
    """An image file as an RGB PIL image (read fully, file closed)."""
    from PIL import Image

    from gpunet.transforms import to_rgb

    with open(path, "rb") as f:
        img = Image.open(f)
        img.load()
    return to_rgb(img)


@contextlib.contextmanager
def forked_rng(seed: int) -> Iterator[None]:
    """Seed python/numpy/torch(CPU) RNGs for a block and restore them afterwards."""
    py_state, np_state, t_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    random.seed(seed)
    np.random.seed(seed % (2 ** 32))
    torch.random.default_generator.manual_seed(seed)  # CPU only: what is restored below
    try:
        yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)
        torch.set_rng_state(t_state)


class SeededImageFolder(Dataset):
    """ImageFolder samples whose random transform is a function of (seed, epoch, index) only.

    Targets follow `label_names` (the run's class names: folder -> its position, as
    `gpunet.labels.folder_targets`) when given, else torchvision's sorted folder order.
    """

    def __init__(self, root: str, transform: Any, seed: int = 0, label_names: Sequence[str] | None = None) -> None:
        from torchvision.datasets import ImageFolder

        try:
            self.folder = ImageFolder(root, loader=load_rgb)
        except FileNotFoundError as exc:  # no class folders, or a class folder without images
            raise TrainError(f"{root}: {exc} (expected {root}/<class>/<image>; every class folder needs at least "
                             "one image: fill or remove the empty ones)") from None
        self.transform = transform
        self.seed = seed
        self.epoch = 0
        self.classes = self.folder.classes  # the class folders, sorted
        self.samples: list[tuple[str, int]] = list(self.folder.samples)
        if label_names is not None:
            self.number_by(label_names)

    def number_by(self, label_names: Sequence[str]) -> None:
        """Targets as positions in `label_names` (a folder missing from them is a SettingError)."""
        from gpunet.labels import folder_targets

        mapping = folder_targets(self.folder.root, self.classes, label_names)
        self.samples = [(path, mapping[self.classes[t]]) for path, t in self.folder.samples]

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path, target = self.samples[index]
        img = self.folder.loader(path)
        with forked_rng(((self.seed * 1_000_003 + self.epoch) * 10_000_019 + index) % (2 ** 63)):
            x = self.transform(img)
        return x, target
