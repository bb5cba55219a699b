"""Top-k accuracy counting: the one implementation of evaluation, training and INT8 comparison."""

from __future__ import annotations

from collections.abc import Sequence

import torch


def correct_topk(logits: torch.Tensor, target: torch.Tensor, ks: Sequence[int] = (1, 5)) -> list[int]:
    """How many rows of `logits` have `target` among their k highest scores, for each k in `ks`.

    k larger than the number of classes counts as all classes (so top-5 of a 3-class model is 100 %).
    """
    maxk = min(max(ks), logits.shape[1])
    pred = logits.topk(maxk, dim=1).indices
    hit = pred.eq(target.view(-1, 1).to(pred.device))
    return [int(hit[:, :min(k, maxk)].any(dim=1).sum()) for k in ks]
