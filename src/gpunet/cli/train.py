"""`gpunet train`: the parser generated from `TrainConfig`'s fields, `--print-config`, exit codes.

Every flag is a `TrainConfig` field (name, type, help, group from the field); every default
is None, so a flag not given leaves the value to the resumed run, the recipe or the default.
Exit status: 0; 2 for a user error (`gpunet train: error: ...`); 128+N when signal N stopped
the run after its recovery checkpoint.
"""

from __future__ import annotations

import argparse
import os
import sys
import types
import typing
from collections.abc import Sequence
from dataclasses import Field
from typing import Any

from gpunet.cli.common import EXIT_OK, err

DESCRIPTION = (
    "Train a GPUNet on an ImageFolder dataset with timm's machinery; `--recipe NAME "
    "--print-config` shows NVIDIA's settings for a model. Multi-process: torchrun "
    "--nproc-per-node N -m gpunet train ..."
)
PRINT_CONFIG_HELP = "print the resolved settings as YAML and exit"
OVERWRITE_HELP = ("start over in an --experiment folder that holds a previous run (its checkpoints, summary and "
                  "args are removed first); without it such a folder is refused unless you --resume")


def register(sub: Any) -> None:
    p = sub.add_parser("train", help="train or fine-tune (NVIDIA's recipes, distillation, torchrun)",
                       description=DESCRIPTION)
    add_train_arguments(p)
    p.set_defaults(func=run)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """One argument per `TrainConfig` field, in field order, the top-level ones first, then one group each."""
    from gpunet.train.config import TrainConfig, config_fields

    hints = typing.get_type_hints(TrainConfig)
    top = [f for f in config_fields() if f.metadata["group"] is None]
    for f in top:
        _add_setting(parser, f, hints[f.name])
    parser.add_argument("--print-config", action="store_true", default=None, help=PRINT_CONFIG_HELP)
    parser.add_argument("--overwrite", action="store_true", default=None, help=OVERWRITE_HELP)
    groups: dict[str, Any] = {}
    for f in config_fields():
        group = f.metadata["group"]
        if group is not None:
            if group not in groups:
                groups[group] = parser.add_argument_group(group)
            _add_setting(groups[group], f, hints[f.name])


def _add_setting(parser: Any, f: Field[Any], hint: Any) -> None:
    """The argument of one field: its flags (or `--field-name`), type and nargs from its type, help from it."""
    from gpunet.train.config import help_text

    meta = f.metadata
    text = help_text(f)
    kwargs: dict[str, Any] = {"help": argparse.SUPPRESS if text is None else text}
    if meta["metavar"]:
        kwargs["metavar"] = meta["metavar"]
    if meta["parser_choices"]:
        kwargs["choices"] = list(meta["parser_choices"])
    flags = meta["flags"] or ("--" + f.name.replace("_", "-"),)
    if not flags[0].startswith("-"):  # a positional setting: optional like every other
        parser.add_argument(*flags, nargs="?", **kwargs)
        return
    kind, nargs = _value_kind(hint)
    if kind is bool:
        kwargs["action"] = argparse.BooleanOptionalAction
    else:
        kwargs["type"] = kind
        if nargs is not None:
            kwargs["nargs"] = nargs
    parser.add_argument(*flags, dest=f.name, default=None, **kwargs)


def _value_kind(hint: Any) -> tuple[type, int | str | None]:
    """(element type, nargs) of a field type: `int | None` -> (int, None), `tuple[float, float]` -> (float, 2),
    `tuple[float, ...]` -> (float, '+')."""
    args = [a for a in typing.get_args(hint) if a is not type(None)] if isinstance(hint, types.UnionType) else [hint]
    (kind,) = args
    if typing.get_origin(kind) is tuple:
        items = typing.get_args(kind)
        return items[0], "+" if items[-1] is Ellipsis else len(items)
    return kind, None


def run(args: argparse.Namespace) -> int:
    """Run `gpunet train` from parsed arguments; the exit status (128+signal when interrupted)."""
    import torch.distributed as dist

    from gpunet.errors import GPUNetError
    from gpunet.train import Trainer, TrainingInterrupted, config_for_run, config_yaml
    from gpunet.train.config import SETTINGS

    overrides = {k: getattr(args, k) for k in SETTINGS if getattr(args, k, None) is not None}
    try:
        cfg = config_for_run(args.recipe, overrides)
        if args.print_config:
            if int(os.environ.get("RANK", "0")) == 0:
                sys.stdout.write(config_yaml(cfg, int(os.environ.get("WORLD_SIZE", "1"))))
            return EXIT_OK
        Trainer(cfg, overwrite=bool(args.overwrite)).run()
        if dist.is_available() and dist.is_initialized():
            dist.barrier()  # every process done before any tears the group down (gloo aborted on a late peer)
    except TrainingInterrupted as exc:
        return 128 + int(exc.signum)
    except GPUNetError as exc:
        err(f"gpunet train: error: {exc}")
        return exc.exit_code
    finally:
        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
    return EXIT_OK


run_from_args = run  # its name in gpunet.train before the command line moved here


def main(argv: Sequence[str] | None = None) -> int:
    """`gpunet train ARGS...` in this process (what `gpunet.train.main` was)."""
    from gpunet.cli import main as gpunet_main

    return gpunet_main(["train", *(sys.argv[1:] if argv is None else argv)])
