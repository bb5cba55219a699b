"""The search space: valid samples covering every choice, encode/decode, mutation, files, validation."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from gpunet.arch import ConvSpec, FusedIRBSpec, IRBSpec, read_json
from gpunet.model import GPUNet
from gpunet.search.space import (
    SearchSpace,
    SearchSpaceError,
    StageSpace,
    arch_key,
    get_space,
    nvidia_space,
    tiny_space,
)


def _check_structure(space: SearchSpace, arch) -> None:  # type: ignore[no-untyped-def]
    stages = {s.stage: s for s in space.stages}
    assert arch.img_resolution in space.resolutions and arch.distill == space.distill
    assert arch.head.out_channels in space.head_filters and arch.tail.out_channels == space.tail_width
    runs: dict[int, list] = {}
    for b in arch.blocks:
        runs.setdefault(b.stage, []).append(b)
    assert list(runs) == sorted(runs)
    for st, run in runs.items():
        s = stages[st]
        cls = {"conv": ConvSpec, "irb": IRBSpec, "fused_irb": FusedIRBSpec}[s.block]
        assert all(type(b) is cls for b in run)
        assert len(run) in s.layers
        assert [b.stride for b in run] == [s.stride] + [1] * (len(run) - 1)  # only the first block strides
        first = run[0]
        assert first.kernel_size in s.kernels and first.out_channels in s.filters and first.act in s.acts
        for b in run:  # layers of a stage share their settings
            assert (b.kernel_size, b.out_channels, b.act, getattr(b, "expansion", None), getattr(b, "use_se", None)) \
                == (first.kernel_size, first.out_channels, first.act, getattr(first, "expansion", None),
                    getattr(first, "use_se", None))
        if s.block != "conv":
            assert first.expansion in s.expansions and first.use_se in s.se
    for s in space.stages:  # stages with 0 layers are omitted
        if s.stage not in runs:
            assert 0 in s.layers


@pytest.mark.parametrize("make", [nvidia_space, tiny_space])
def test_samples_are_valid_and_cover_every_choice(make) -> None:  # type: ignore[no-untyped-def]
    space = make()
    rng = np.random.default_rng(0)
    seen = np.zeros((space.vector_length, int(space.gene_sizes().max())), dtype=bool)
    for _ in range(1500):
        v = space.sample(rng)
        arch = space.decode(v, num_classes=10)
        _check_structure(space, arch)
        assert read_json(json.loads(arch.dumps())) == arch  # NVIDIA JSON round trip
        seen[np.arange(len(v)), v] = True
    sizes = space.gene_sizes()
    for i, name in enumerate(space.gene_names()):
        if name.startswith("stage") and not name.endswith(".layers"):
            continue  # genes of an empty stage are zeroed (canonical); checked on the decoded layers below
        assert seen[i, : sizes[i]].all(), f"{name}: not every choice sampled"


def test_decoded_layer_values_cover_the_ranges() -> None:
    space = nvidia_space()
    rng = np.random.default_rng(1)
    seen: dict[int, dict[str, set]] = {s.stage: {"k": set(), "act": set(), "e": set(), "out": set(), "se": set()}
                                        for s in space.stages}
    res = set()
    for _ in range(1500):
        arch = space.decode(space.sample(rng))
        res.add(arch.img_resolution)
        for b in arch.blocks:
            d = seen[b.stage]
            d["k"].add(b.kernel_size), d["act"].add(b.act), d["out"].add(b.out_channels)
            d["e"].add(getattr(b, "expansion", 1)), d["se"].add(bool(getattr(b, "use_se", False)))
    assert res == set(range(224, 513, 32))
    for s in space.stages:
        d = seen[s.stage]
        assert d["k"] == {3, 5} and d["act"] == {"relu", "swish"} and d["out"] == set(s.filters)
        assert d["e"] == set(s.expansions) and d["se"] == set(s.se)
    assert seen[7]["out"] == set(range(256, 833, 64)) and seen[2]["e"] == {2, 3, 4, 5, 6}


def test_tiny_samples_build_and_run() -> None:
    space = tiny_space()
    rng = np.random.default_rng(2)
    for _ in range(5):
        arch = space.decode(space.sample(rng), num_classes=3)
        model = GPUNet(arch).eval()
        with torch.no_grad():
            y = model(torch.randn(1, 3, arch.img_resolution, arch.img_resolution))
        assert y.shape == (1, 3)


@pytest.mark.parametrize("make", [nvidia_space, tiny_space])
def test_encode_decode_round_trip(make) -> None:  # type: ignore[no-untyped-def]
    space = make()
    rng = np.random.default_rng(3)
    for _ in range(300):
        v = space.sample(rng)
        arch = space.decode(v)
        assert space.encode(arch).tolist() == v.tolist()
        assert space.decode(space.encode(arch)) == arch
        # through NVIDIA's JSON text too
        assert space.encode(read_json(json.loads(arch.dumps()))).tolist() == v.tolist()
        raw = rng.integers(0, space.gene_sizes())  # non-canonical vectors decode to their canonical form
        assert space.encode(space.decode(raw)).tolist() == space.canonical(raw).tolist()
    assert len(space.encode(space.decode(space.sample(rng)))) == space.vector_length


def test_encode_rejects_architectures_outside_the_space() -> None:
    from gpunet.zoo import get_architecture

    with pytest.raises(SearchSpaceError):
        tiny_space().encode(get_architecture("gpunet_0"))
    with pytest.raises(SearchSpaceError, match="out of range"):
        tiny_space().decode([99] * tiny_space().vector_length)
    with pytest.raises(SearchSpaceError, match="length"):
        tiny_space().decode([0, 0])


def test_mutation_changes_and_stays_valid() -> None:
    space = nvidia_space()
    rng = np.random.default_rng(4)
    v = space.sample(rng)
    for _ in range(200):
        m = space.mutate(v, rng)
        _check_structure(space, space.decode(m))
        c = space.crossover(v, m, rng)
        _check_structure(space, space.decode(c))
        v = m
    diffs = [int((space.mutate(v, rng) != v).sum()) for _ in range(100)]
    assert 0.5 < np.mean(diffs) < 5  # small steps (a change in an empty stage's genes is no change)


def test_sampling_is_deterministic_given_a_seed() -> None:
    space = nvidia_space()
    a = [space.sample(np.random.default_rng(7)).tolist() for _ in range(2)]
    assert a[0] == a[1]
    assert arch_key(space.decode(a[0])) == arch_key(space.decode(a[1]))


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_save_load_round_trip_and_customising(tmp_path, suffix) -> None:  # type: ignore[no-untyped-def]
    space = nvidia_space()
    stages = list(space.stages)
    stages[3] = dataclasses.replace(stages[3], kernels=(3, 5, 7), expansions=(2, 4, 6, 8))
    custom = space.with_(stages=tuple(stages), name="k7", resolutions=(224, 256))
    path = tmp_path / f"space{suffix}"
    if suffix == ".json":
        custom.save(path)
    else:
        import yaml

        path.write_text(yaml.safe_dump(custom.to_dict()))
    loaded = get_space(path)
    assert loaded == custom
    rng = np.random.default_rng(0)
    ks = {b.kernel_size for _ in range(300) for b in loaded.decode(loaded.sample(rng)).blocks if b.stage == 4}
    assert ks == {3, 5, 7}
    assert get_space("tiny") == tiny_space()


def test_distilled_family() -> None:
    stages = tuple(StageSpace(s.stage, s.block, s.stride, s.kernels, s.layers, ("relu",), s.filters, s.expansions,
                              (False,)) for s in tiny_space().stages if s.block != "conv")
    space = SearchSpace(stages=stages, head_filters=(8,), head_acts=("relu",), resolutions=(32,), tail_width=64,
                        distill=True, name="distilled")
    arch = space.decode(space.sample(np.random.default_rng(0)), num_classes=4)
    assert arch.distill and GPUNet(arch)(torch.randn(1, 3, 32, 32)).shape == (1, 4)
    assert space.decode(space.encode(arch), num_classes=4) == arch


@pytest.mark.parametrize("change, match", [
    ({"block": "transformer"}, "block"),
    ({"stride": 3}, "stride"),
    ({"kernels": (4,)}, "odd"),
    ({"filters": ()}, "at least one"),
    ({"acts": ("gelu",)}, "acts"),
])
def test_invalid_spaces_are_rejected(change, match) -> None:  # type: ignore[no-untyped-def]
    space = tiny_space()
    stages = list(space.stages)
    stages[1] = dataclasses.replace(stages[1], **change)
    with pytest.raises(SearchSpaceError, match=match):
        space.with_(stages=tuple(stages))
    with pytest.raises(SearchSpaceError, match="conv"):
        space.with_(stages=(dataclasses.replace(stages[0], se=(False, True)),) + tuple(stages[1:]))
    with pytest.raises(SearchSpaceError, match="distilled"):
        space.with_(distill=True)
    with pytest.raises(SearchSpaceError, match="unknown search space"):
        get_space("no-such-space")
