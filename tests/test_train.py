"""Training: recipes, exact resume after SIGTERM, torchrun (1 process: DDP) = single process, distillation, fine-tuning.

Everything runs on CPU with a few-layer GPUNet JSON, 32-48 px images and 16 images.
Subprocess tests use the real entry point (`python -m gpunet train`, `torchrun -m gpunet train`).
"""

from __future__ import annotations

import math
import re
import signal
import subprocess
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from _train_helpers import PYTHON, TINY_A, TINY_B, TORCHRUN, env, load_ckpt, make_dataset, run_train, write_arch

import gpunet
from gpunet.cli import main as gpunet_main
from gpunet.errors import DistributedError, RecipeError
from gpunet.train import RECIPES, Trainer, resolve_config, scaled_lr, train
from gpunet.train.distill import kd_loss
from gpunet.train.distributed import init_distributed
from gpunet.weights import save_nvidia_checkpoint


def main(argv: list[str]) -> int:
    """`gpunet train ARGV...` in this process."""
    return gpunet_main(["train", *argv])


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train")
    make_dataset(root / "data")
    make_dataset(root / "data3", classes=3, train_per_class=4, val_per_class=2, seed=1)
    write_arch(root / "tiny_a.json", TINY_A)
    write_arch(root / "tiny_b.json", TINY_B)
    return root


def _quiet(**kw: Any) -> dict[str, Any]:
    base = {"workers": 0, "device": "cpu", "log_interval": 1000}
    base.update(kw)
    return base


# ---------------------------------------------------------------------------- recipes

@pytest.mark.parametrize("name", list(RECIPES))
def test_recipe_resolves_to_nvidias_hyperparameters(name: str) -> None:
    cfg = resolve_config(name)
    r = RECIPES[name]
    assert cfg["model"] == name and cfg["recipe"] == name
    assert (cfg["opt"], cfg["opt_eps"], cfg["sched"], cfg["epochs"]) == ("rmsproptf", 1e-3, "step", 450)
    assert (cfg["decay_epochs"], cfg["decay_rate"], cfg["warmup_lr"], cfg["weight_decay"]) == (2.4, 0.97, 1e-6, 1e-5)
    assert cfg["model_ema"] and cfg["model_ema_decay"] == 0.9999 and cfg["amp"]
    assert (cfg["aa"], cfg["reprob"], cfg["remode"]) == ("rand-m9-mstd0.5", 0.2, "pixel")
    assert cfg["drop"] == 0.2
    assert cfg["batch_size"] == {"gpunet_d2": 128, "gpunet_p0": 256, "gpunet_p1": 256}.get(name, 192)
    nvidia_lr = 0.08 if name in ("gpunet_p0", "gpunet_p1") else 0.06
    assert scaled_lr(cfg, world_size=8) == pytest.approx(nvidia_lr)  # NVIDIA's 8 GPUs: its lr exactly
    assert scaled_lr(cfg, world_size=1) == pytest.approx(nvidia_lr / 8)  # one GPU: scaled by the global batch
    assert cfg["img_size"] == gpunet.get_pretrained_config(name).input_size[-1]
    assert cfg["crop_pct"] == gpunet.get_pretrained_config(name).crop_pct
    assert cfg["drop_path"] == (0.0 if name in ("gpunet_d1", "gpunet_d2") else 0.2)
    teachers = {"gpunet_p0": ("tf_efficientnet_b2", 260), "gpunet_p1": ("tf_efficientnet_b2", 260),
                "gpunet_d1": ("tf_efficientnet_b5_ns", 456), "gpunet_d2": ("tf_efficientnet_b6_ns", 528)}
    assert (cfg["teacher"], cfg["teacher_img_size"]) == teachers.get(name, (None, None)) == (r.teacher,
                                                                                             r.teacher_img_size)


def test_overrides_and_errors() -> None:
    cfg = resolve_config("gpunet_0", {"lr": 0.5, "batch_size": 16, "aa": "none", "model_ema": False})
    assert (cfg["lr"], cfg["batch_size"], cfg["aa"], cfg["model_ema"]) == (0.5, 16, None, False)
    assert scaled_lr(cfg, 4) == 0.5  # an explicit lr is used as is
    with pytest.raises(RecipeError, match="gpunet_d1"):
        resolve_config("gpunet_dl")
    with pytest.raises(RecipeError, match="sched"):
        resolve_config(None, {"sched": "nope"})


def test_dataset_layout_errors_name_the_folder(work: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An empty class folder or a split without class folders is a one-line error naming the folder (torchvision's
    FileNotFoundError used to surface without it); a --val-split the user named must exist (it used to be skipped
    like the missing default, so the run trained without the evaluation asked for)."""
    import shutil

    args = ["--model", str(work / "tiny_a.json"), "--workers", "0", "--epochs", "1", "-b", "2", "--img-size", "32",
            "--output", str(tmp_path / "runs")]
    data = tmp_path / "data"
    shutil.copytree(work / "data", data)
    (data / "train" / "class_9").mkdir()
    assert main([str(data), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"gpunet train: error: {data / 'train'}: Found no valid file for the classes class_9")
    assert err.endswith("fill or remove the empty ones)") and len(err.splitlines()) == 1
    (data / "train" / "class_9").rmdir()
    assert main([str(data), *args, "--val-split", "valid"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"gpunet train: error: {data / 'valid'}: validation split not found (--val-split valid); name an "
                   "existing folder, or pass --val-split '' to train without evaluation")
    assert not (tmp_path / "runs").exists()  # refused before a run folder was made
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    assert main([str(empty), *args]) == 2
    assert "Couldn't find any class folder" in capsys.readouterr().err


def test_print_config_shows_resolved_settings(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--recipe", "gpunet_d1", "--print-config", "--epochs", "3", "-b", "96"]) == 0
    cfg = yaml.safe_load(capsys.readouterr().out)
    assert cfg["recipe"] == "gpunet_d1" and cfg["epochs"] == 3 and cfg["batch_size"] == 96
    assert cfg["teacher"] == "tf_efficientnet_b5_ns" and cfg["resolved_lr"] == pytest.approx(0.06 * 96 / 1536)


def test_usage_errors_exit_2(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(work / "missing"), "--model", str(work / "tiny_a.json"), "--workers", "0"]) == 2
    assert "training split not found" in capsys.readouterr().err
    assert main([str(work / "data"), "--workers", "0"]) == 2
    assert "no model" in capsys.readouterr().err
    assert main([str(work / "data"), "--model", str(work / "tiny_a.json"), "--teacher", "resnet18"]) == 2
    assert "--teacher-checkpoint" in capsys.readouterr().err


def test_train_config_is_typed_frozen_and_reads_like_the_old_dict() -> None:
    import dataclasses

    from gpunet.train import TrainConfig

    cfg = TrainConfig(scale=[0.5, 1.0], aa="None", data_dir=Path("/data"))
    assert cfg.scale == (0.5, 1.0) and cfg.aa is None and cfg.data_dir == "/data"  # normalised on creation
    assert cfg["epochs"] == cfg.epochs == 300 and dict(cfg)["opt"] == "sgd" and "lr" in cfg
    assert cfg.to_dict()["scale"] == [0.5, 1.0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.epochs = 3  # type: ignore[misc]
    with pytest.raises(RecipeError, match="batch_size: expected a positive integer"):
        TrainConfig(batch_size=0)
    with pytest.raises(RecipeError, match=r"reprob: expected a value in \[0, 1\)"):
        dataclasses.replace(cfg, reprob=1.0)
    with pytest.raises(RecipeError, match="Did you mean 'epochs'"):
        resolve_config(None, {"epoch": 3})


@pytest.mark.parametrize(("setting", "value", "expected"), [
    # each of these went through unchecked: a traceback from timm or torch at the first step, or silently
    # meaningless (a flip probability of 2 flips always, a negative weight decay grows the weights)
    ("opt", "nope", "an optimizer name timm knows"),
    ("lr", -1.0, "a positive number"),
    ("lr", math.nan, "a positive number"),
    ("lr_base", 0.0, "a positive number"),
    ("weight_decay", -1e-5, "a number >= 0"),
    ("momentum", -0.9, "a number >= 0"),
    ("opt_betas", (0.9, 1.5), r"two \(or three\) numbers in \[0, 1\)"),
    ("opt_eps", 0.0, "a positive number"),
    ("clip_grad", -1.0, "a positive number"),
    ("warmup_epochs", -1, "an integer >= 0"),
    ("workers", -2, "an integer >= 0"),
    ("hflip", 2.0, r"a probability in \[0, 1\]"),
    ("mixup_prob", 1.5, r"a probability in \[0, 1\]"),
    ("scale", (0.9, 0.1), "two numbers 0 < min <= max <= 1"),
    ("ratio", (0.0, 1.0), "two numbers 0 < min <= max"),
    ("crop_pct", 0.0, r"a fraction in \(0, 1\]"),
    ("std", (0.2, 0.0, 0.2), "three positive numbers"),
    ("mean", (0.5, 0.5), "three numbers"),
    ("interpolation", "cubic", "one of 'bicubic', 'bilinear', 'nearest'"),
    ("train_interpolation", "cubic", "one of 'random'"),
    ("aa", "rand_m9", "a timm auto-augment policy"),
    ("model_ema_decay", 1.0, r"a value in \[0, 1\)"),
    ("log_interval", 0, "a positive integer"),
    ("num_classes", 0, "a positive integer"),
])
def test_bad_settings_are_named_before_any_work(setting: str, value: object, expected: str) -> None:
    with pytest.raises(RecipeError, match=rf"^{setting}: expected {expected}.*, got "):
        resolve_config(None, {setting: value})


def test_every_recipe_and_accepted_optimizer_name_passes_the_checks() -> None:
    """The names accepted without asking timm are timm's, and timm's own names (with lookahead_) pass."""
    from timm.optim import list_optimizers

    from gpunet.train.config import _WELL_KNOWN_OPTIMIZERS

    assert _WELL_KNOWN_OPTIMIZERS <= set(list_optimizers())
    for name in ("adamw", "lookahead_adamw", "lion", "RMSpropTF"):
        assert resolve_config(None, {"opt": name}).opt == name
    for recipe in RECIPES:
        resolve_config(recipe)
    assert resolve_config(None, {"aa": "rand-m9-mstd0.5-inc1", "train_interpolation": "lanczos"}).aa


def test_cli_flags_are_generated_from_the_config_fields(capsys: pytest.CaptureFixture[str]) -> None:
    """One flag per setting, every default None (the recipe or config decides), help showing the field's default."""
    import argparse

    from gpunet.cli.train import add_train_arguments
    from gpunet.train.config import SETTINGS, config_fields

    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    dests = {a.dest for a in parser._actions}
    assert set(SETTINGS) <= dests and {"recipe", "print_config"} <= dests
    assert all(v is None for k, v in vars(parser.parse_args([])).items())
    args = parser.parse_args(["D", "--scale", "0.5", "1", "--no-model-ema", "-b", "8", "--opt-betas", "0.9", "0.99"])
    assert (args.data_dir, args.scale, args.model_ema, args.batch_size, args.opt_betas) == (
        "D", [0.5, 1.0], False, 8, [0.9, 0.99])
    wd = next(f for f in config_fields() if f.name == "weight_decay")
    parser.print_help()
    assert "weight decay (default 2e-5)" in " ".join(capsys.readouterr().out.split()) and wd.default == 2e-5


def test_frozen_teacher_stays_in_eval_mode() -> None:
    from gpunet.train.distill import FrozenTeacher, freeze

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.BatchNorm1d(4), torch.nn.Dropout(0.5))
    teacher = freeze(net)
    assert isinstance(teacher, FrozenTeacher) and freeze(teacher) is teacher
    owner = torch.nn.ModuleDict({"teacher": teacher, "student": torch.nn.Linear(4, 4)}).train()
    assert owner["student"].training and not any(m.training for m in teacher.modules())
    assert not any(p.requires_grad for p in teacher.parameters())


def test_old_import_paths_still_work_with_a_deprecation_warning() -> None:
    import gpunet.cli.train
    import gpunet.train.checkpoint
    import gpunet.train.distill
    import gpunet.train.distributed

    with pytest.deprecated_call():
        from gpunet.recipes import RECIPES as old_recipes
    assert old_recipes is RECIPES
    with pytest.deprecated_call():
        from gpunet.recipes import resolve_config as old_resolve
    assert old_resolve is resolve_config
    with pytest.deprecated_call():
        from gpunet.distill import kd_loss as old_kd_loss
    assert old_kd_loss is kd_loss
    with pytest.deprecated_call():
        from gpunet.distributed import ShardSampler
    assert ShardSampler is gpunet.train.distributed.ShardSampler
    with pytest.deprecated_call():
        from gpunet.train import main as old_main
    assert old_main is gpunet.cli.train.main
    with pytest.deprecated_call():
        from gpunet.train import read_training_checkpoint
    assert read_training_checkpoint is gpunet.train.checkpoint.read_training_checkpoint


@pytest.mark.slow
@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_runs_one_epoch(name: str, work: Path) -> None:
    """The real released architectures (and timm teachers, untrained) with every recipe setting, at 32 px."""
    res = train(work / "data", recipe=name, **_quiet(img_size=32, teacher_img_size=40, batch_size=4, epochs=1,
                                                      teacher_random_weights=True, output=str(work / "recipes"),
                                                      experiment=name))
    assert res.epochs_run == 1 and res.last["train_loss"] > 0 and "ema_top1" in res.last
    for f in Path(res.output_dir).glob("*.pth.tar"):
        f.unlink()  # hundreds of MB each


def test_recipe_settings_run_one_epoch_on_a_tiny_model(work: Path) -> None:
    """Fast stand-in for the slow test above: a distillation recipe's every setting (AMP, EMA, RandAugment,
    erasing, rmsproptf, step schedule, teacher at another size) on the tiny architecture."""
    res = train(work / "data", recipe="gpunet_p0", **_quiet(
        model=str(work / "tiny_a.json"), img_size=32, batch_size=4, epochs=1, teacher=str(work / "tiny_b.json"),
        teacher_img_size=48, teacher_random_weights=True, output=str(work / "recipes_tiny"), experiment="p0"))
    assert res.epochs_run == 1 and res.last["train_loss"] > 0
    args = yaml.safe_load((Path(res.output_dir) / "args.yaml").read_text())
    assert args["opt"] == "rmsproptf" and args["aa"] == "rand-m9-mstd0.5" and args["teacher_img_size"] == 48


@pytest.mark.parametrize("autotune", [True, False])
def test_cudnn_autotuning_is_on_for_the_run_only(work: Path, autotune: bool) -> None:
    """`cudnn_benchmark` (default on) holds while the model trains; the process setting comes back after."""
    cfg = resolve_config(None, _quiet(data_dir=str(work / "data"), model=str(work / "tiny_a.json"), img_size=32,
                                      batch_size=8, epochs=1, val_split="", cudnn_benchmark=autotune,
                                      output=str(work / "autotune"), experiment=str(autotune)))
    tr = Trainer(cfg)
    seen: list[bool] = []
    tr.net.register_forward_pre_hook(lambda m, a: seen.append(torch.backends.cudnn.benchmark))
    before = torch.backends.cudnn.benchmark
    tr.run()
    assert seen and set(seen) == {autotune}
    assert torch.backends.cudnn.benchmark is before


# ---------------------------------------------------------------------------- outputs, resume

RESUME_ARGS = ["--img-size", "32", "-b", "4", "--epochs", "3", "--workers", "0", "--device", "cpu",
               "--log-interval", "1", "--model-ema", "--model-ema-decay", "0.9", "--aa", "rand-m9-mstd0.5",
               "--reprob", "0.2", "--opt", "rmsproptf", "--opt-eps", "0.001", "--lr", "0.01", "--mixup", "0.2",
               "--sched", "step", "--warmup-epochs", "1", "--decay-epochs", "1", "--decay-rate", "0.5"]


def test_sigterm_then_resume_is_bit_identical(work: Path) -> None:
    """3 epochs x 4 steps with augmentation, mixup, dropout, drop path and EMA; SIGTERM after step 6
    (mid-epoch 2), resume from the recovery checkpoint: final weights equal bit for bit."""
    common = [str(work / "data"), "--model", str(work / "tiny_a.json"), "--output", str(work / "resume"),
              *RESUME_ARGS]
    full = run_train([*common, "--experiment", "full"], cwd=work)
    assert full.returncode == 0, full.stderr[-3000:]

    cmd = [PYTHON, "-m", "gpunet", "train", *common, "--experiment", "cut", "--debug-step-delay", "0.5"]
    proc = subprocess.Popen(cmd, cwd=work, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    lines, sent = [], False
    for line in proc.stdout:
        lines.append(line)
        if not sent and re.match(r"train: .* step 6 ", line):
            proc.send_signal(signal.SIGTERM)
            sent = True
    assert proc.wait(timeout=120) == 128 + signal.SIGTERM, "".join(lines)[-3000:]
    out = work / "resume" / "cut"
    assert (out / "recovery.pth.tar").is_file() and (out / "last.pth.tar").is_file()
    recovery = load_ckpt(out / "recovery.pth.tar")
    stopped = recovery["gpunet"]["global_step"]
    assert 6 <= stopped < 12
    assert recovery["gpunet"]["next_epoch"] == (stopped - 1) // 4  # the epoch it stopped in (0-based)
    assert recovery["gpunet"]["step_in_epoch"] == (stopped - 1) % 4 + 1

    resumed = run_train(["--resume", str(out / "recovery.pth.tar")], cwd=work)  # settings from the checkpoint
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"step {stopped + 1} " in resumed.stderr and f"step {stopped} " not in resumed.stderr  # progress: stderr
    assert not (out / "recovery.pth.tar").exists()

    a, b = load_ckpt(work / "resume" / "full" / "last.pth.tar"), load_ckpt(out / "last.pth.tar")
    assert a["epoch"] == b["epoch"] == 2
    for key in ("state_dict", "state_dict_ema"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for sa, sb in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values(), strict=True):
        assert all(torch.equal(sa[k], sb[k]) for k in sa)
    full_csv = (work / "resume" / "full" / "summary.csv").read_text().splitlines()
    cut_csv = (out / "summary.csv").read_text().splitlines()
    assert [r.rsplit(",", 1)[0] for r in full_csv] == [r.rsplit(",", 1)[0] for r in cut_csv]  # but images/s
    assert full_csv[0].startswith("epoch,train_loss,eval_loss,eval_top1,eval_top5,") and len(full_csv) == 4


def test_outputs_are_nvidia_compatible(work: Path) -> None:
    res = train(work / "data", **_quiet(model=str(work / "tiny_a.json"), img_size=32, batch_size=8, epochs=1,
                                        model_ema=True, output=str(work / "outputs"), experiment="one"))
    out = Path(res.output_dir)
    assert {p.name for p in out.iterdir()} == {"args.yaml", "summary.csv", "architecture.json", "last.pth.tar",
                                               "model_best.pth.tar"}
    ckpt = load_ckpt(out / "last.pth.tar")
    assert {"epoch", "arch", "state_dict", "state_dict_ema", "optimizer", "version", "args", "metric"} <= set(ckpt)
    assert all(k.startswith("network.") for k in ckpt["state_dict"])  # NVIDIA's key names
    assert any(k.startswith("network. layer") for k in ckpt["state_dict"])
    model = gpunet.create_model(out / "architecture.json", weights=out / "last.pth.tar")  # EMA weights, 2 classes
    assert model.num_classes == 2
    ema = dict(model.state_dict())
    from gpunet.weights import from_nvidia

    expected, _ = from_nvidia(ckpt["state_dict_ema"], model.arch)
    assert all(torch.equal(ema[k], expected[k]) for k in expected)


# ---------------------------------------------------------------------------- torchrun

def test_torchrun_one_and_two_processes_equal_one_plain_process(work: Path) -> None:
    """1 torchrun process (DDP over gloo) == a plain process, bit for bit; 2 gloo processes x batch 4
    (sync BN) == 1 process x batch 8. Augmentation (RandAugment, erasing) is a function of the sample,
    so it stays on; dropout/drop path/mixup are per-process RNG: off."""
    common = [str(work / "data"), "--model", str(work / "tiny_a.json"), "--output", str(work / "ddp"),
              "--img-size", "32", "--epochs", "2", "--workers", "0", "--device", "cpu", "--drop", "0",
              "--drop-path", "0", "--aa", "rand-m9-mstd0.5", "--reprob", "0.2", "--opt", "sgd", "--lr", "0.05",
              "--sched", "step", "--warmup-epochs", "0", "--model-ema", "--model-ema-decay", "0.5"]
    one = run_train([*common, "-b", "8", "--experiment", "one"], cwd=work)
    assert one.returncode == 0, one.stderr[-3000:]
    solo = run_train([*common, "-b", "8", "--experiment", "solo"], cwd=work, torchrun=1)
    assert solo.returncode == 0, solo.stderr[-3000:]
    assert "1 process(es) on cpu (DDP over gloo)" in solo.stderr
    assert "(DDP" not in one.stderr
    a, s = load_ckpt(work / "ddp" / "one" / "last.pth.tar"), load_ckpt(work / "ddp" / "solo" / "last.pth.tar")
    for key in ("state_dict", "state_dict_ema"):
        assert a[key].keys() == s[key].keys() and all(torch.equal(a[key][k], s[key][k]) for k in a[key]), key
    rows_solo = [r.rsplit(",", 1)[0] for r in (work / "ddp" / "solo" / "summary.csv").read_text().splitlines()]
    assert rows_solo == [r.rsplit(",", 1)[0] for r in (work / "ddp" / "one" / "summary.csv").read_text().splitlines()]
    two = run_train([*common, "-b", "4", "--sync-bn", "--experiment", "two"], cwd=work, torchrun=2)
    assert two.returncode == 0, (two.stdout[-2000:], two.stderr[-3000:])
    assert "2 process(es) on cpu" in two.stderr
    a, b = load_ckpt(work / "ddp" / "one" / "last.pth.tar"), load_ckpt(work / "ddp" / "two" / "last.pth.tar")
    assert b["gpunet"]["world_size"] == 2 and len(b["gpunet"]["rng"]) == 2
    for key in ("state_dict", "state_dict_ema"):  # weights, BN running stats, EMA
        for k in a[key]:
            torch.testing.assert_close(b[key][k], a[key][k], atol=1e-5, rtol=1e-4, msg=f"{key} {k}")
    rows_a = (work / "ddp" / "one" / "summary.csv").read_text().splitlines()[1:]
    rows_b = (work / "ddp" / "two" / "summary.csv").read_text().splitlines()[1:]
    for ra, rb in zip(rows_a, rows_b, strict=True):  # train/eval loss, top-1/5 reduced over ranks
        fa, fb = [float(v) for v in ra.split(",")[:-1]], [float(v) for v in rb.split(",")[:-1]]
        assert fa == pytest.approx(fb, rel=1e-4, abs=1e-5)
    assert not list((work / "ddp").glob("two/*.tmp"))


FLAG_SCRIPT = """
import pathlib, sys
import torch.distributed as dist
from gpunet.train.distributed import any_process_flag, init_distributed
info = init_distributed("cpu")
flag = any_process_flag(15 if info.rank == 1 else 0, info)
pathlib.Path(sys.argv[1], f"rank{info.rank}.txt").write_text(f"{info.distributed} {flag}")
if dist.is_initialized():
    dist.destroy_process_group()
"""


def test_a_stop_flag_raised_in_one_process_reaches_every_process(tmp_path: Path) -> None:
    """What makes all processes stop at the same step when a signal reaches only one of them."""
    script = tmp_path / "flag.py"
    script.write_text(FLAG_SCRIPT)
    (tmp_path / "two").mkdir()
    (tmp_path / "plain").mkdir()
    two = subprocess.run([TORCHRUN, "--standalone", "--nproc-per-node=2", str(script), str(tmp_path / "two")],
                         env=env(), capture_output=True, text=True, timeout=120)
    assert two.returncode == 0, two.stderr[-3000:]
    assert [(tmp_path / "two" / f"rank{r}.txt").read_text() for r in (0, 1)] == ["True 15", "True 15"]
    plain = subprocess.run([PYTHON, str(script), str(tmp_path / "plain")], env=env(), capture_output=True, text=True,
                           timeout=60)
    assert plain.returncode == 0, plain.stderr[-2000:]
    assert (tmp_path / "plain" / "rank0.txt").read_text() == "False 0"


def test_world_size_without_torchrun_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(DistributedError, match="WORLD_SIZE=2 but MASTER_ADDR is not set: start multi-process"):
        init_distributed("cpu")


# ---------------------------------------------------------------------------- distillation

def test_kd_loss_is_nvidias_soft_target_cross_entropy() -> None:
    from timm.loss import SoftTargetCrossEntropy

    s, t = torch.randn(4, 5), torch.randn(4, 5)
    assert torch.allclose(kd_loss(s, t), SoftTargetCrossEntropy()(s, t.softmax(-1)))
    assert kd_loss(s, t, 2.0) == pytest.approx(4 * SoftTargetCrossEntropy()(s / 2, (t / 2).softmax(-1)).item())


def test_distillation_teacher_at_larger_size_gets_no_gradient(work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    teacher = gpunet.create_model(work / "tiny_b.json", num_classes=2)
    save_nvidia_checkpoint(teacher, work / "teacher.pth.tar")
    cfg = resolve_config(None, _quiet(data_dir=str(work / "data"), model=str(work / "tiny_a.json"), img_size=32,
                                      teacher=str(work / "tiny_b.json"), teacher_weights=str(work / "teacher.pth.tar"),
                                      teacher_img_size=48, test_teacher=True, batch_size=4, epochs=1, lr=0.01,
                                      output=str(work / "kd"), experiment="kd"))
    tr = Trainer(cfg)
    sizes: dict[str, list[int]] = {"student": [], "teacher": []}
    tr.net.register_forward_pre_hook(lambda m, a: sizes["student"].append(a[0].shape[-1]) if m.training else None)
    tr.teacher.register_forward_pre_hook(lambda m, a: sizes["teacher"].append(a[0].shape[-1]))  # type: ignore[union-attr]
    before = {k: v.clone() for k, v in tr.teacher.state_dict().items()}  # type: ignore[union-attr]
    tr.run()
    assert "teacher" in capsys.readouterr().out.split("top-1")[0]
    assert set(sizes["student"]) == {32} and set(sizes["teacher"]) == {48}  # 48 px batches, student downsampled
    assert len(sizes["student"]) == 4  # 4 training steps
    assert tr.teacher is not None and not tr.teacher.training
    assert all(p.grad is None and not p.requires_grad for p in tr.teacher.parameters())
    after = tr.teacher.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)  # no BN statistics updates either
    assert all(p.grad is not None for p in tr.net.parameters())


# ---------------------------------------------------------------------------- fine-tuning

def test_finetune_new_classes_and_linear_probe(work: Path) -> None:
    pre = gpunet.create_model(work / "tiny_a.json")  # 1000 classes
    save_nvidia_checkpoint(pre, work / "pre.pth.tar")
    cfg = resolve_config(None, _quiet(data_dir=str(work / "data3"), model=str(work / "tiny_a.json"), img_size=32,
                                      initial_checkpoint=str(work / "pre.pth.tar"), freeze_backbone=True,
                                      batch_size=4, epochs=1, lr=0.1, drop=0.1, drop_path=0.05,
                                      output=str(work / "ft"), experiment="probe"))
    tr = Trainer(cfg)
    assert tr.net.num_classes == 3 and tr.net.classifier.out_features == 3
    assert tr.net.drop_rate == 0.1 and tr.net.drop_path_rate == 0.05
    drop_paths = [m.drop_prob for m in tr.net.modules() if type(m).__name__ == "DropPath"]
    assert drop_paths and max(drop_paths) <= 0.05
    fresh = tr.net.classifier.weight.detach().clone()
    tr.run()
    pre_sd, new_sd = pre.state_dict(), tr.net.state_dict()
    backbone = [k for k in new_sd if not k.startswith("classifier.")]
    assert all(torch.equal(pre_sd[k], new_sd[k]) for k in backbone)  # frozen: weights and BN statistics
    assert not torch.equal(new_sd["classifier.weight"], fresh)  # the new classifier learned
    model = gpunet.create_model(Path(tr.output_dir) / "architecture.json",
                                weights=Path(tr.output_dir) / "last.pth.tar")
    assert model.num_classes == 3


# ---------------------------------------------------------------------------- run folders, output streams

def test_a_second_run_into_the_same_experiment_needs_resume_or_overwrite(work: Path,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    """A finished run's folder: a new run is refused (files untouched), --resume continues it, --overwrite
    starts over with only the new run's files. Results on stdout, notes and progress on stderr."""
    out = work / "again" / "x"
    common = [str(work / "data"), "--model", str(work / "tiny_a.json"), "--img-size", "32", "-b", "4", "--workers",
              "0", "--device", "cpu", "--output", str(work / "again"), "--experiment", "x", "--log-interval", "1"]
    assert main([*common, "--epochs", "1", "--lr", "0.05"]) == 0
    first = capsys.readouterr()
    assert all(line.startswith(("epoch 1/1 ", "gpunet train: done;")) for line in first.out.splitlines())
    assert "tiny_a.json (" in first.err and "train: epoch 1/1 batch 1/4 step 1 " in first.err
    before = {p.name: p.read_bytes() for p in out.iterdir()}

    assert main([*common, "--epochs", "1", "--lr", "0.01"]) == 2
    err = capsys.readouterr().err
    assert f"{out} already holds a training run" in err and "--resume" in err and "--overwrite" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # model_best and the rest untouched

    (out / "stale.txt").write_text("not ours")  # files a run does not write are left alone
    assert main([*common, "--epochs", "1", "--lr", "0.01", "--overwrite"]) == 0
    capsys.readouterr()
    assert yaml.safe_load((out / "args.yaml").read_text())["lr"] == 0.01
    assert load_ckpt(out / "model_best.pth.tar")["args"]["lr"] == 0.01  # the new run's best, not the old one
    assert (out / "stale.txt").read_text() == "not ours"

    assert main(["--resume", str(out / "last.pth.tar"), "--epochs", "2"]) == 0
    assert load_ckpt(out / "last.pth.tar")["epoch"] == 1
    with pytest.raises(gpunet.errors.TrainError, match="already holds a training run"):
        Trainer(resolve_config(None, _quiet(data_dir=str(work / "data"), model=str(work / "tiny_a.json"),
                                            img_size=32, batch_size=4, epochs=1, output=str(work / "again"),
                                            experiment="x")))
