"""Architecture: NVIDIA JSON round trip, file I/O, validation errors and the compact tables."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import pytest

import gpunet
from gpunet import limits
from gpunet.arch import (
    ArchitectureError,
    ConvSpec,
    FusedIRBSpec,
    HeadSpec,
    IRBSpec,
    TailSpec,
    check_image_size,
    from_table,
)
from gpunet.errors import SettingError

MODEL_NAMES = ("gpunet_0", "gpunet_1", "gpunet_2", "gpunet_p0", "gpunet_p1", "gpunet_d1", "gpunet_d2")


def _nvidia_json(shared_reference: Path, name: str) -> list[dict[str, Any]]:
    return json.loads((shared_reference / "configs" / f"{name}.json").read_text())


# ---------------------------------------------------------------------------- round trip

@pytest.mark.parametrize("name", MODEL_NAMES)
def test_round_trip_nvidia_json(shared_reference: Path, name: str) -> None:
    raw = _nvidia_json(shared_reference, name)
    arch = gpunet.read_json(raw)
    again = gpunet.read_json(arch.to_json())
    assert again == arch
    assert again.to_json() == arch.to_json()
    # equal to NVIDIA's JSON, except the D2 tail's typo key "stage:" which we write as "stage"
    expected = [{("stage" if k == "stage:" else k): v for k, v in entry.items()} for entry in raw]
    assert arch.to_json() == expected
    # NVIDIA's key order is kept as well
    assert [list(e) for e in arch.to_json()] == [list(e) for e in expected]
    if name == "gpunet_d2":
        assert "stage:" in raw[-1] and arch.to_json()[-1]["stage"] == raw[-1]["stage:"]
    else:
        assert arch.to_json() == raw


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_load_json_matches_read_json(shared_reference: Path, name: str) -> None:
    path = shared_reference / "configs" / f"{name}.json"
    arch = gpunet.load_json(path)
    assert arch == gpunet.read_json(_nvidia_json(shared_reference, name))
    assert arch == gpunet.loads_json(path.read_text())
    assert arch.distill == name.startswith("gpunet_d")
    assert isinstance(arch.head, HeadSpec) and isinstance(arch.tail, TailSpec)
    assert arch.num_classes == 1000


@pytest.mark.parametrize("name", ["gpunet_0", "gpunet_p0", "gpunet_d2"])
def test_save_then_load(tmp_path: Path, name: str) -> None:
    arch = gpunet.get_architecture(name)
    path = tmp_path / "sub" / f"{name}.json"
    arch.save(path)
    assert path.is_file()
    back = gpunet.load_json(path)
    assert back == arch
    assert json.loads(path.read_text()) == arch.to_json()
    assert not [p for p in path.parent.iterdir() if p.name != path.name], "temporary files left behind"


def test_architecture_is_immutable() -> None:
    arch = gpunet.get_architecture("gpunet_0")
    with pytest.raises(AttributeError):
        arch.img_resolution = 10  # type: ignore[misc]
    assert hash(arch.layers[1]) == hash(copy.deepcopy(arch.layers[1]))


def test_float_expansion_survives(shared_reference: Path) -> None:
    arch = gpunet.load_json(shared_reference / "configs" / "gpunet_p0.json")
    expansions = [b.expansion for b in arch.blocks if isinstance(b, IRBSpec)]
    assert 7.67 in expansions
    assert all(type(e) in (int, float) for e in expansions)
    assert any(type(e) is int for e in expansions)  # ints stay ints (8, not 8.0)


# ---------------------------------------------------------------------------- validation errors

def _base(name: str = "gpunet_0") -> list[dict[str, Any]]:
    return gpunet.get_architecture(name).to_json()


def _expect_error(obj: Any, index: int | None, field: str | None) -> str:
    with pytest.raises(ArchitectureError) as info:
        gpunet.read_json(obj)
    msg = str(info.value)
    if index is not None:
        assert f"entry {index}" in msg, msg
        assert info.value.index == index
    if field is not None:
        assert f"field '{field}'" in msg, msg
        assert info.value.field_name == field
    assert isinstance(info.value, ValueError)
    return msg


def test_base_documents_are_valid() -> None:
    for name in ("gpunet_0", "gpunet_2", "gpunet_d1", "gpunet_d2"):
        assert gpunet.read_json(_base(name)) == gpunet.get_architecture(name)


def test_unknown_layer_type() -> None:
    obj = _base()
    obj[3]["layer_type"] = "transformer"
    msg = _expect_error(obj, 3, "layer_type")
    assert "transformer" in msg


def test_data_only_as_entry_0() -> None:
    obj = _base()
    obj[3]["layer_type"] = "data"
    _expect_error(obj, 3, "layer_type")


@pytest.mark.parametrize("field", ["kernel_size", "stride", "num_in_channels", "num_out_channels"])
def test_missing_field(field: str) -> None:
    obj = _base()
    assert obj[3]["layer_type"] == "conv"
    del obj[3][field]
    msg = _expect_error(obj, 3, field)
    assert "missing" in msg


def test_missing_layer_type() -> None:
    obj = _base()
    del obj[5]["layer_type"]
    _expect_error(obj, 5, "layer_type")


@pytest.mark.parametrize("field", ["expansion", "kernel_size"])
def test_missing_field_irb(field: str) -> None:
    obj = _base("gpunet_d1")
    del obj[4][field]
    _expect_error(obj, 4, field)


@pytest.mark.parametrize(("index", "field"), [(2, "act"), (5, "act"), (5, "use_se"), (11, "use_se"),
                                              (2, "stage")])
def test_missing_non_distilled_fields(index: int, field: str) -> None:
    obj = _base("gpunet_0")
    assert field in obj[index]
    del obj[index][field]
    msg = _expect_error(obj, index, field)
    assert "missing" in msg


def test_distilled_path_needs_no_act_or_use_se() -> None:
    obj = _base("gpunet_d1")
    assert all("act" not in e and "use_se" not in e for e in obj)
    gpunet.read_json(obj)  # valid as is


def test_non_distilled_head_act_is_optional() -> None:
    obj = _base("gpunet_0")
    assert "act" not in obj[1]
    arch = gpunet.read_json(obj)
    assert arch.head.act is None
    assert "act" not in arch.to_json()[1]


def test_unknown_field() -> None:
    obj = _base()
    obj[4]["dilation"] = 2
    msg = _expect_error(obj, 4, "dilation")
    assert "unknown" in msg


def test_unknown_field_in_data_entry() -> None:
    obj = _base()
    obj[0]["batch"] = 1
    _expect_error(obj, 0, "batch")


def test_expansion_on_conv_is_unknown() -> None:
    obj = _base()
    obj[2]["expansion"] = 4
    _expect_error(obj, 2, "expansion")


def test_channels_must_chain() -> None:
    obj = _base()
    obj[6]["num_in_channels"] += 1
    msg = _expect_error(obj, 6, "num_in_channels")
    assert "entry 5" in msg  # names the layer it should chain from


def test_tail_channels_must_chain() -> None:
    obj = _base("gpunet_d1")
    obj[-1]["num_in_channels"] = 7
    _expect_error(obj, len(obj) - 1, "num_in_channels")


@pytest.mark.parametrize("stride", [0, 3, 4, -1, 1.0, True, "2"])
def test_stride_must_be_1_or_2(stride: Any) -> None:
    obj = _base()
    obj[4]["stride"] = stride
    _expect_error(obj, 4, "stride")


@pytest.mark.parametrize("k", [2, 4, 0, -3, 3.0])
def test_kernel_size_must_be_odd(k: Any) -> None:
    obj = _base()
    obj[5]["kernel_size"] = k
    _expect_error(obj, 5, "kernel_size")


@pytest.mark.parametrize(("index", "field", "value"), [
    (2, "num_out_channels", 0),
    (2, "num_out_channels", -32),
    (1, "num_in_channels", 0),
    (4, "expansion", 0),
    (4, "expansion", -2.5),
    (-1, "num_classes", 0),
    (0, "img_resolution", 0),
    (0, "img_resolution", -224),
])
def test_non_positive_values(index: int, field: str, value: Any) -> None:
    obj = _base()
    assert field in obj[index]
    obj[index][field] = value
    _expect_error(obj, index % len(obj), field)


@pytest.mark.parametrize(("field", "value"), [("act", "gelu"), ("use_se", "yes"), ("img_resolution", 224.0),
                                              ("distill", 1)])
def test_bad_field_types(field: str, value: Any) -> None:
    obj = _base()
    index = 0 if field in ("img_resolution", "distill") else 4
    obj[index][field] = value
    _expect_error(obj, index, field)


def test_first_entry_must_be_data() -> None:
    obj = _base()[1:]
    msg = _expect_error(obj, 0, "layer_type")
    assert "data" in msg


def test_data_entry_needs_resolution_and_distill() -> None:
    for field in ("img_resolution", "distill"):
        obj = _base()
        del obj[0][field]
        _expect_error(obj, 0, field)


def test_head_must_be_first() -> None:
    obj = _base()
    obj[1], obj[2] = obj[2], obj[1]
    _expect_error(obj, 1, "layer_type")


def test_head_only_once() -> None:
    obj = _base()
    head = dict(obj[1], num_in_channels=32)
    obj.insert(2, head)
    msg = _expect_error(obj, 2, "layer_type")
    assert "first" in msg


def test_tail_must_be_last() -> None:
    obj = _base()
    obj.pop()  # now the last entry is an irb
    _expect_error(obj, len(obj) - 1, "layer_type")


def test_tail_only_once() -> None:
    obj = _base()
    last_out = obj[-2]["num_out_channels"]
    extra = {"layer_type": "tail", "num_in_channels": last_out, "num_out_channels": last_out, "num_classes": 10}
    obj.insert(len(obj) - 1, extra)
    msg = _expect_error(obj, len(obj) - 2, "layer_type")
    assert "last" in msg


def test_needs_head_and_tail() -> None:
    obj = _base()[:2]
    with pytest.raises(ArchitectureError):
        gpunet.read_json(obj)


def test_conv_rejected_on_distilled_path() -> None:
    obj = _base("gpunet_d1")
    c = obj[1]["num_out_channels"]
    obj.insert(2, {"layer_type": "conv", "num_in_channels": c, "num_out_channels": c, "stride": 1,
                   "kernel_size": 3, "stage": 0})
    msg = _expect_error(obj, 2, "layer_type")
    assert "conv" in msg and "distill" in msg


def test_head_large_rejected_on_non_distilled_path() -> None:
    obj = _base()
    obj[1]["layer_type"] = "head_large"
    msg = _expect_error(obj, 1, "layer_type")
    assert "head_large" in msg
    # and accepted on the distilled path
    obj = _base("gpunet_d1")
    obj[1]["layer_type"] = "head_large"
    assert gpunet.read_json(obj).head.large


def test_distilled_irb_needs_integral_hidden_width() -> None:
    obj = _base("gpunet_d1")
    assert obj[3]["num_in_channels"] == 33
    obj[3]["expansion"] = 1.5  # 33 * 1.5 = 49.5
    msg = _expect_error(obj, 3, "expansion")
    assert "49.5" in msg
    obj[3]["expansion"] = 2.0  # 66: fine
    gpunet.read_json(obj)


def test_distilled_path_is_relu_without_se() -> None:
    obj = _base("gpunet_d1")
    obj[3]["act"] = "swish"
    _expect_error(obj, 3, "act")
    obj = _base("gpunet_d1")
    obj[3]["use_se"] = True
    _expect_error(obj, 3, "use_se")


def test_non_distilled_groups_must_be_1() -> None:
    obj = _base()
    obj[5]["groups"] = 2
    _expect_error(obj, 5, "groups")


@pytest.mark.parametrize("obj", [{}, [], "layers", 3, None])
def test_not_a_list(obj: Any) -> None:
    with pytest.raises(ArchitectureError, match="list"):
        gpunet.read_json(obj)


def test_entry_not_an_object() -> None:
    obj: list[Any] = _base()
    obj[3] = ["conv"]
    _expect_error(obj, 3, None)


def test_not_json(tmp_path: Path) -> None:
    path = tmp_path / "broken.json"
    path.write_text('[{"layer_type": "data",')
    with pytest.raises(ArchitectureError) as info:
        gpunet.load_json(path)
    assert str(path) in str(info.value) and "JSON" in str(info.value)
    with pytest.raises(ArchitectureError, match="JSON"):
        gpunet.loads_json("not json at all")


def test_file_not_found(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "nothing.json"
    with pytest.raises(ArchitectureError) as info:
        gpunet.load_json(path)
    assert str(path) in str(info.value)
    assert "not found" in str(info.value)


def test_directory_is_architecture_error(tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.mkdir()
    with pytest.raises(ArchitectureError) as info:
        gpunet.load_json(path)
    assert str(path) in str(info.value)


def test_stage_alias_is_unknown_in_data_entry() -> None:
    obj = _base()
    obj[0]["stage:"] = 1
    _expect_error(obj, 0, "stage:")


def test_conflicting_stage_and_alias() -> None:
    obj = _base()
    obj[3]["stage:"] = obj[3]["stage"] + 5
    _expect_error(obj, 3, None)


def test_errors_in_files_name_the_path(tmp_path: Path) -> None:
    obj = _base()
    obj[4]["stride"] = 3
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(obj))
    with pytest.raises(ArchitectureError) as info:
        gpunet.load_json(path)
    msg = str(info.value)
    assert str(path) in msg and "entry 4" in msg and "field 'stride'" in msg


# ---------------------------------------------------------------------------- resource limits

# gpunet_0's entries: 3 conv, 9 irb (64 -> 256, expansion 5), 13 irb (704 -> 704), 14 tail
@pytest.mark.parametrize(("index", "field", "value", "limit"), [
    (9, "expansion", 1_000_000, "MAX_EXPANSION"),  # the JSON: ran and took 7.2 GB
    (9, "num_out_channels", 10**9, "MAX_CHANNELS"),
    (9, "num_out_channels", 10**5, "MAX_CHANNELS"),
    (14, "num_classes", 10**9, "MAX_CLASSES"),
    (9, "kernel_size", 10001, "MAX_KERNEL_SIZE"),
    (0, "img_resolution", 100_000, "MAX_IMAGE_SIZE"),
    (13, "expansion", 30, "MAX_CHANNELS"),  # 704 * 30 = 21120 hidden channels
])
def test_resource_limits_name_file_entry_field_value_and_limit(tmp_path: Path, index: int, field: str, value: int,
                                                               limit: str) -> None:
    obj = _base()
    obj[index][field] = value
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(obj))
    start = time.monotonic()
    with pytest.raises(ArchitectureError) as info:
        gpunet.load_json(path)
    assert time.monotonic() - start < 0.5  # refused before anything is allocated
    msg = str(info.value)
    shown = value * 704 if limit == "MAX_CHANNELS" and field == "expansion" else value
    for part in (str(path), f"entry {index}", f"field '{field}'", str(shown), f"{getattr(limits, limit):,}",
                 f"gpunet.limits.{limit}"):
        assert part in msg, (part, msg)


def _single_layer(head: int, conv: int, kernel: int, resolution: int, tail: int = 1984) -> list[dict[str, Any]]:
    return [{"layer_type": "data", "img_resolution": resolution, "distill": False},
            {"layer_type": "head", "num_in_channels": 3, "num_out_channels": head},
            {"layer_type": "conv", "num_in_channels": head, "num_out_channels": conv, "stride": 1,
             "kernel_size": kernel, "act": "relu", "stage": 1},
            {"layer_type": "tail", "num_in_channels": conv, "num_out_channels": tail, "num_classes": 1000}]


@pytest.mark.parametrize(("obj", "limit", "index"), [
    (_single_layer(16384, 16384, 31, 32), "MAX_PARAMETERS", None),  # each field allowed, 258 G parameters together
    (_single_layer(1024, 8, 3, 4096, tail=16), "MAX_ACTIVATION", 1),  # 1024 channels at 2048 x 2048 for one image
])
def test_total_size_limits(obj: list[dict[str, Any]], limit: str, index: int | None) -> None:
    with pytest.raises(ArchitectureError) as info:
        gpunet.read_json(obj)
    msg = str(info.value)
    assert f"{getattr(limits, limit):,} (gpunet.limits.{limit})" in msg, msg
    assert info.value.index == index


def test_estimate_is_close_to_the_built_models() -> None:
    import torch

    for name in MODEL_NAMES:
        arch = gpunet.get_architecture(name)
        with torch.device("meta"):
            model = gpunet.GPUNet(arch)
        real = sum(p.numel() for p in model.parameters())
        estimate = sum(p for p, _ in limits.estimate_layers(arch))
        assert abs(estimate - real) / real < 0.02, (name, estimate, real)


def test_cli_refuses_a_huge_architecture_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from gpunet.cli import main

    obj = _base()
    obj[9]["expansion"] = 1_000_000
    path = tmp_path / "huge.json"
    path.write_text(json.dumps(obj))
    assert main(["info", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("gpunet: error: ") and err.count("\n") == 1 and "MAX_EXPANSION" in err, err


@pytest.mark.parametrize(("size", "words"), [
    (100_000, ["--img-size 100000", "4,096", "gpunet.limits.MAX_IMAGE_SIZE"]),  # the issue's --img-size 100000
    (0, ["--img-size 0", "minimum of 32"]), (-5, ["minimum"]), (16, ["minimum"]),
    (224.0, ["whole number"]), ("224", ["whole number"]), (True, ["whole number"]),
])
def test_check_image_size(size: Any, words: list[str]) -> None:
    with pytest.raises(SettingError) as info:
        check_image_size(size)
    for word in words:
        assert word in str(info.value), (word, str(info.value))


def test_check_image_size_accepts_usable_sizes() -> None:
    assert [check_image_size(s, setting="img_size") for s in (32, 224, 528, 4096)] == [32, 224, 528, 4096]
    with pytest.raises(SettingError, match="img_size 5000"):
        check_image_size(5000, setting="img_size")


def test_check_num_classes() -> None:
    assert limits.check_num_classes(0) == 0 and limits.check_num_classes(21841) == 21841
    with pytest.raises(SettingError, match=r"num_classes 1000000000 is over the limit of 100,000"):
        limits.check_num_classes(10**9)
    with pytest.raises(SettingError, match="whole number"):
        limits.check_num_classes(-1)


# ---------------------------------------------------------------------------- compact tables

TABLE = """
# stage  type        n  k  s  e     out   act    se   groups
-      head        1  -  -  -     16    relu   -    -
1      conv        2  3  2  -     24    relu   -    -
2      irb         3  5  2  4.5   40    swish  yes  -
3      fused_irb   2  3  1  3     40    relu   no   -
-      tail        1  -  -  -     640   -      -    -
"""


def test_from_table_decodes_runs() -> None:
    arch = from_table(TABLE, img_resolution=128, distill=False, num_classes=7)
    assert arch.img_resolution == 128 and not arch.distill and arch.num_classes == 7
    kinds = [type(layer) for layer in arch.layers]
    assert kinds == [HeadSpec, ConvSpec, ConvSpec, IRBSpec, IRBSpec, IRBSpec, FusedIRBSpec, FusedIRBSpec, TailSpec]
    head, blocks, tail = arch.head, arch.blocks, arch.tail
    assert (head.in_channels, head.out_channels, head.act, head.stage) == (3, 16, "relu", None)
    # first layer of a run has the row's stride, the rest stride 1
    assert [b.stride for b in blocks] == [2, 1, 2, 1, 1, 1, 1]
    # channels chain
    assert [(b.in_channels, b.out_channels) for b in blocks] == [
        (16, 24), (24, 24), (24, 40), (40, 40), (40, 40), (40, 40), (40, 40)]
    assert (tail.in_channels, tail.out_channels, tail.num_classes) == (40, 640, 7)
    irb = blocks[2]
    assert (irb.kernel_size, irb.expansion, irb.act, irb.use_se, irb.groups, irb.stage) == (
        5, 4.5, "swish", True, None, 2)
    assert blocks[5].use_se is False and blocks[5].layer_type == "fused_irb"
    # '-' leaves fields out of the JSON
    js = arch.to_json()
    assert "act" not in js[-1] and "groups" not in js[4] and "stage" not in js[1]


def test_from_table_in_channels_and_validation() -> None:
    arch = from_table(TABLE, img_resolution=64, distill=False, in_channels=1)
    assert arch.head.in_channels == 1
    with pytest.raises(ArchitectureError):
        from_table(TABLE.replace("4.5", "4.5 extra"), img_resolution=64, distill=False)
    with pytest.raises(ArchitectureError):
        from_table(TABLE.replace("fused_irb", "mystery"), img_resolution=64, distill=False)
    # the distilled path rejects the conv rows, as read_json does
    with pytest.raises(ArchitectureError, match="conv"):
        from_table(TABLE, img_resolution=64, distill=True)


def test_from_table_round_trips_through_json() -> None:
    arch = from_table(TABLE, img_resolution=96, distill=False)
    assert gpunet.read_json(arch.to_json()) == arch
