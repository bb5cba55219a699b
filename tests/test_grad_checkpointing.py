"""Gradient checkpointing (timm's `set_grad_checkpointing`, `gpunet train --grad-checkpointing`): the same
gradients, BatchNorm statistics and trained weights as without it, and far less memory kept for the backward pass."""

from __future__ import annotations

from pathlib import Path

import pytest
import timm
import torch
import yaml
from _train_helpers import TINY_A, load_ckpt, make_dataset, run_train, write_arch

import gpunet  # noqa: F401  (registers gpunet_* with timm)

pytestmark = pytest.mark.usefixtures("single_thread_torch")


def _x(n: int = 1, res: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 3, res, res, generator=torch.Generator().manual_seed(seed))


def _saved_bytes(step) -> int:
    """Bytes autograd keeps for the backward pass while `step` runs its forward."""
    total = 0

    def pack(t: torch.Tensor) -> torch.Tensor:
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step()
    return total


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_d1"])
def test_grad_checkpointing_same_gradients_less_memory(name: str) -> None:
    results = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = timm.create_model(name, drop_path_rate=0.2).train()  # drop path: the RNG must replay
        model.set_grad_checkpointing(checkpointing)
        x = _x(4, res=96)
        out: list[torch.Tensor] = []
        saved = _saved_bytes(lambda m=model, x=x, out=out: out.append(m(x)))
        out[0].square().mean().backward()
        results.append((saved, {n: p.grad for n, p in model.named_parameters()}, model.state_dict()))
    (plain_saved, plain_grads, plain_state), (ckpt_saved, ckpt_grads, ckpt_state) = results
    assert ckpt_saved < 0.5 * plain_saved, (ckpt_saved, plain_saved)
    for n, g in plain_grads.items():
        torch.testing.assert_close(ckpt_grads[n], g, rtol=1e-5, atol=1e-7, msg=n)
    for k, v in plain_state.items():  # BatchNorm statistics updated once, not again in the recompute
        assert torch.equal(ckpt_state[k], v), k


def test_grad_checkpointing_features_backbone() -> None:
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        feats = timm.create_model("gpunet_0", features_only=True).train()
        feats.set_grad_checkpointing(checkpointing)
        sum(f.square().mean() for f in feats(_x(2))).backward()
        grads.append([p.grad for p in feats.parameters()])
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_grad_checkpointing_lowers_cuda_peak_memory() -> None:
    peaks = []
    for checkpointing in (False, True):
        model = timm.create_model("gpunet_d1").cuda().train()
        model.set_grad_checkpointing(checkpointing)
        x = torch.randn(16, 3, 456, 456, device="cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        model(x).mean().backward()
        torch.cuda.synchronize()
        peaks.append(torch.cuda.max_memory_allocated())
        del model, x
        torch.cuda.empty_cache()
    assert peaks[1] < 0.5 * peaks[0], peaks
    print(f"GPUNet-D1 batch 16 at 456 px, peak CUDA memory: {peaks[0] / 2**30:.2f} GiB plain, "
          f"{peaks[1] / 2**30:.2f} GiB with grad checkpointing")


def test_gpunet_train_with_grad_checkpointing_trains_the_same_weights(tmp_path: Path) -> None:
    """Two epochs with drop path, dropout and EMA: the final checkpoints are equal bit for bit."""
    make_dataset(tmp_path / "data")
    arch = write_arch(tmp_path / "tiny.json", TINY_A)
    common = [str(tmp_path / "data"), "--model", str(arch), "--img-size", "32", "-b", "4", "--epochs", "2",
              "--workers", "0", "--device", "cpu", "--drop-path", "0.1", "--lr", "0.01", "--model-ema",
              "--output", str(tmp_path / "out")]
    for name, extra in (("plain", []), ("ckpt", ["--grad-checkpointing"])):
        proc = run_train([*common, "--experiment", name, *extra], cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
    args = yaml.safe_load((tmp_path / "out" / "ckpt" / "args.yaml").read_text())
    assert args["grad_checkpointing"] is True
    plain, ckpt = (load_ckpt(tmp_path / "out" / n / "last.pth.tar") for n in ("plain", "ckpt"))
    for key in ("state_dict", "state_dict_ema"):
        assert plain[key].keys() == ckpt[key].keys()
        assert all(torch.equal(plain[key][k], ckpt[key][k]) for k in plain[key]), key
