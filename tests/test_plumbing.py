"""The shared plumbing every layer uses: device selection, autocast, thread counts, timing, top-k."""

from __future__ import annotations

import pytest
import torch

from gpunet.device import amp_dtype, autocast, cpu_threads, resolve_device
from gpunet.errors import SettingError
from gpunet.metrics import correct_topk
from gpunet.timing import percentile, sample_times


def test_resolve_device() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(None) == resolve_device("auto")
    for bad in ("tpu", "gpu0", "cuda:x"):
        with pytest.raises(SettingError, match="cpu, cuda or cuda:N"):
            resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error on a machine without CUDA")
def test_cuda_without_a_gpu_is_a_setting_error() -> None:
    with pytest.raises(SettingError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_autocast_dtypes() -> None:
    cpu = torch.device("cpu")
    assert amp_dtype(cpu) == torch.bfloat16
    assert amp_dtype(torch.device("cuda"), torch.bfloat16) == torch.bfloat16
    x = torch.randn(4, 4)
    with autocast(cpu, True):
        assert (x @ x).dtype == torch.bfloat16
    with autocast(cpu, False):
        assert (x @ x).dtype == torch.float32


def test_cpu_threads_is_restored_even_after_an_error() -> None:
    before = torch.get_num_threads()
    with pytest.raises(RuntimeError), cpu_threads(1) as n:
        assert n == 1 == torch.get_num_threads()
        raise RuntimeError
    assert torch.get_num_threads() == before
    with pytest.raises(SettingError):
        with cpu_threads(0):
            pass
    assert torch.get_num_threads() == before


def test_percentile_and_sampling() -> None:
    assert percentile([3.0, 1.0, 2.0, 4.0], 50) == 2.5
    assert percentile([1.0], 99) == 1.0
    calls = []
    times = sample_times(lambda: calls.append(1), warmup=2, repeats=5)
    assert len(times) == 5 and len(calls) == 7 and all(t >= 0 for t in times)


def test_correct_topk() -> None:
    logits = torch.tensor([[0.1, 0.9, 0.0], [0.8, 0.1, 0.15], [0.2, 0.3, 0.5]])
    target = torch.tensor([1, 2, 0])
    assert correct_topk(logits, target, (1, 2, 5)) == [1, 2, 3]
