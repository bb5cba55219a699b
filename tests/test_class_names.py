"""Class names travel: the class folders a model is trained on are its outputs' names everywhere after.

A `gpunet train` checkpoint records them (`label_names`, timm's key); `Classifier`, `predict`,
`validate`, exports (labels.txt, ONNX metadata), `quantize --val` and `convert` use them, and an
ImageFolder is numbered by them, so a model trained on ImageNet synset folders (an Imagenette-like
subset) is validated with the mapping it was trained with.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from _helpers import run_cli, save_ngc_zip
from _train_helpers import TINY_A, load_ckpt, write_arch
from PIL import Image

import gpunet
from gpunet import cli
from gpunet.data import ImageFolder
from gpunet.deploy.metadata import META_LABELS, read_metadata
from gpunet.errors import SettingError
from gpunet.labels import imagenet_labels, synset_to_index
from gpunet.train import train
from gpunet.train.data import SeededImageFolder

pytestmark = pytest.mark.usefixtures("single_thread_torch")

COLOURS = {"blue": (40, 60, 220), "green": (40, 200, 60), "red": (220, 40, 40)}
SYNSETS = ["n01440764", "n02102040", "n02979186"]  # tench, English springer, cassette player (Imagenette's)
LABEL_NAMES = "label_names"  # timm's pretrained_cfg key; the training checkpoint's entry


def colour_folders(root: Path, names: list[str], per_class: int, seed: int = 0) -> Path:
    """root/<name>/<i>.png: noise around one colour per class (the colours in COLOURS order)."""
    rng = np.random.default_rng(seed)
    for name, rgb in zip(names, COLOURS.values(), strict=False):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            a = np.clip(np.array(rgb) + rng.normal(0, 40, (36, 40, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(a).save(root / name / f"{i}.png")
    return root


def _train(data: Path, out: Path, name: str, arch: Path) -> Path:
    res = train(data, model=str(arch), img_size=32, batch_size=4, epochs=1, workers=0, device="cpu", lr=0.05,
                log_interval=1000, output=str(out), experiment=name)
    return Path(res.output_dir)


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> dict[str, Path]:
    """A model trained 1 epoch on folders blue/green/red."""
    root = tmp_path_factory.mktemp("colours")
    names = list(COLOURS)
    colour_folders(root / "data" / "train", names, 4, seed=1)
    colour_folders(root / "data" / "val", names, 2, seed=2)
    arch = write_arch(root / "tiny.json", TINY_A)
    run = _train(root / "data", root / "runs", "colours", arch)
    return {"root": root, "data": root / "data", "run": run, "arch": run / "architecture.json",
            "ckpt": run / "last.pth.tar"}


def test_the_checkpoint_records_the_class_folders(colours) -> None:
    from gpunet.records import read_records

    for name in ("last.pth.tar", "model_best.pth.tar"):
        assert load_ckpt(colours["run"] / name)[LABEL_NAMES] == ["blue", "green", "red"]
    assert read_records(colours["ckpt"]).label_names == ["blue", "green", "red"]


def test_predict_says_blue_green_red(colours, capsys) -> None:
    clf = gpunet.Classifier(colours["arch"], weights=colours["ckpt"], device="cpu")
    assert clf.model.pretrained_cfg["label_names"] == ["blue", "green", "red"]  # timm's key, on the model
    assert clf.labels == clf.class_ids == ["blue", "green", "red"]
    image = colours["data"] / "val" / "red" / "0.png"
    [p] = clf.predict(image, top_k=3)
    assert {t.label for t in p.topk} == {"blue", "green", "red"}
    assert all(t.label == ["blue", "green", "red"][t.index] for t in p.topk)
    assert cli.main(["predict", str(image), "--model", str(colours["arch"]), "--weights", str(colours["ckpt"]),
                     "--format", "json", "-k", "3"]) == 0
    topk = json.loads(capsys.readouterr().out)["results"][0]["topk"]
    assert [t["label"] for t in topk] == [t.label for t in p.topk]
    assert not any(t["label"].startswith("class_") for t in topk)


def test_validate_numbers_folders_by_the_models_class_names(colours, tmp_path) -> None:
    """A validation folder with only green and red: green is still output 1 and red output 2 (sorted
    numbering would make them 0 and 1), and a folder the model has no class for is refused."""
    val = colour_folders(tmp_path / "val", ["green", "red"], 3, seed=5)
    result = gpunet.validate(colours["arch"], val, weights=colours["ckpt"], workers=0, device="cpu", progress=False)
    clf = gpunet.Classifier(colours["arch"], weights=colours["ckpt"], device="cpu")
    hits = sum(clf.predict(f)[0].index == {"green": 1, "red": 2}[f.parent.name] for f in sorted(val.rglob("*.png")))
    assert result.classes_by_name and not result.imagenet_classes and result.count == 6
    assert result.top1 == pytest.approx(100 * hits / 6)
    ds = ImageFolder(val)
    ds.map_classes(["blue", "green", "red"])
    assert ds.class_to_idx == {"green": 1, "red": 2} and ds.num_classes == 3
    colour_folders(val, ["purple"], 1)
    with pytest.raises(SettingError, match="purple are not among the model's 3 classes"):
        gpunet.validate(colours["arch"], val, weights=colours["ckpt"], workers=0, device="cpu", progress=False)


def test_exports_carry_the_class_names(colours, tmp_path) -> None:
    model = gpunet.classify.load_model(colours["arch"], weights=colours["ckpt"])
    from gpunet.deploy import export_onnx
    from gpunet.deploy.triton import export_triton

    folder = export_triton(model, tmp_path / "repo", check=False)
    assert (folder / "labels.txt").read_text().splitlines() == ["blue", "green", "red"]
    onnx_path = tmp_path / "c.onnx"
    export_onnx(model, onnx_path, check=False)
    meta = read_metadata(onnx_path)
    assert meta[META_LABELS] == meta["gpunet.label_names"] == ["blue", "green", "red"]
    clf = gpunet.Classifier(onnx_path, device="cpu")
    assert clf.labels == clf.class_ids == ["blue", "green", "red"]
    assert gpunet.validate(onnx_path, colours["data"] / "val", workers=0, progress=False).classes_by_name


def test_convert_uses_the_architecture_the_training_checkpoint_records(colours, tmp_path, capsys) -> None:
    out = tmp_path / "c.safetensors"
    assert cli.main(["convert", str(colours["ckpt"]), str(out)]) == 0  # no --model: recorded in the checkpoint
    assert f"wrote {out}" in capsys.readouterr().out
    a = gpunet.create_model(colours["arch"], weights=colours["ckpt"])
    b = gpunet.create_model(out)
    x = torch.randn(2, 3, 32, 32)
    assert b.num_classes == 3 and torch.equal(a(x), b(x))


# ---------------------------------------------------------------------------- ImageNet synset folders

def test_a_model_trained_on_synset_folders_validates_with_its_own_mapping(tmp_path, capsys) -> None:
    """An Imagenette-like subset: 3 synset folders, a 3-class model. Before, validate wanted 1000 classes."""
    colour_folders(tmp_path / "data" / "train", SYNSETS, 4, seed=3)
    colour_folders(tmp_path / "data" / "val", SYNSETS, 2, seed=4)
    arch = write_arch(tmp_path / "tiny.json", TINY_A)
    run = _train(tmp_path / "data", tmp_path / "runs", "inet", arch)
    assert load_ckpt(run / "last.pth.tar")[LABEL_NAMES] == SYNSETS
    capsys.readouterr()
    val = tmp_path / "data" / "val"
    assert cli.main(["validate", str(val), "--model", str(run / "architecture.json"), "--weights",
                     str(run / "last.pth.tar"), "--workers", "0", "--format", "json"]) == 0
    result = json.loads(capsys.readouterr().out)
    clf = gpunet.Classifier(run / "architecture.json", weights=run / "last.pth.tar", device="cpu")
    hits = sum(clf.predict(f)[0].index == SYNSETS.index(f.parent.name) for f in sorted(val.rglob("*.png")))
    assert result["classes_by_name"] and result["count"] == 6 and result["top1"] == pytest.approx(100 * hits / 6)
    # the display names are ImageNet's descriptions of the synsets; the ids are the synsets
    assert clf.class_ids == SYNSETS and clf.labels == [imagenet_labels()[synset_to_index()[s]] for s in SYNSETS]


def test_training_and_evaluation_number_synset_folders_alike(tmp_path) -> None:
    """1000 classes on synset folders: the ImageNet indices in training (as evaluation always did);
    fewer classes: the sorted folders, and ImageFolder follows the recorded names."""
    from gpunet.labels import folder_targets, training_label_names

    colour_folders(tmp_path / "d", SYNSETS, 1)
    names_1000 = training_label_names(SYNSETS, 1000)
    trained = SeededImageFolder(str(tmp_path / "d"), None, label_names=names_1000)
    evaluated = ImageFolder(tmp_path / "d")
    imagenet_index = sorted(synset_to_index()[s] for s in SYNSETS)
    assert sorted({t for _, t in trained.samples}) == sorted(evaluated.class_to_idx.values()) == imagenet_index
    names_3 = training_label_names(SYNSETS, 3)
    assert names_3 == SYNSETS and folder_targets("d", SYNSETS[1:], names_3) == {SYNSETS[1]: 1, SYNSETS[2]: 2}
    assert training_label_names(["b", "a"], 4) == ["a", "b", "class_2", "class_3"]


def test_validate_labels_file_for_weights_without_names(tmp_path, capsys) -> None:
    """NVIDIA-layout weights record no names: --labels gives the folders' order; without it, a clear error."""
    colour_folders(tmp_path / "val", SYNSETS, 2)
    arch = write_arch(tmp_path / "tiny.json", [*TINY_A[:-1], {**TINY_A[-1], "num_classes": 3}])
    ckpt = save_ngc_zip(gpunet.create_model(arch), tmp_path / "w.zip", "w.pth.tar")
    args = ["validate", str(tmp_path / "val"), "--model", str(arch), "--weights", str(ckpt), "--workers", "0"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert "records no class names" in err and "--labels" in err and err.count("\n") == 1
    labels = tmp_path / "labels.txt"
    labels.write_text("\n".join(reversed(SYNSETS)) + "\n")
    assert cli.main([*args, "--labels", str(labels), "--format", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["classes_by_name"] is True


def test_predict_cli_in_a_subprocess_shows_the_names(colours) -> None:
    r = run_cli(["predict", colours["data"] / "val" / "blue", "--model", colours["arch"], "--weights",
                 colours["ckpt"], "--format", "csv", "-k", "1"])
    assert r.returncode == 0, r.stderr
    rows = r.stdout.splitlines()[1:]
    assert len(rows) == 2 and all(row.split(",")[4] in COLOURS for row in rows)
