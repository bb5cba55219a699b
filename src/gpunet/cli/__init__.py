"""The `gpunet` command: a thin skin over the Python API, one module per command.

Exit status: 0 success; 1 some inputs could not be read (the others were still processed);
2 a usage or setup error (unknown model, missing or unfit weights, failed download, bad
file), reported as one `gpunet: error: ...` message. Only gpunet's own errors
(`gpunet.errors.GPUNetError`) and environment failures (a missing file, no permission, a
full disk) are reported that way: anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from gpunet.cli.common import DEFAULT_MODEL, EXIT_OK, EXIT_USAGE, CLIError, err, wrap

# (module under gpunet.cli, its register function), in the order `gpunet --help` lists them
COMMANDS = (
    ("predict", "register"), ("validate", "register"), ("info", "register"), ("info", "register_list"),
    ("convert", "register"), ("train", "register"), ("export", "register"), ("quantize", "register"),
    ("benchmark", "register"), ("search", "register"),
    ("serve", "register"),
)
_ENVIRONMENT_ERRNOS = {errno.ENOENT, errno.ENOTDIR, errno.EISDIR, errno.EACCES, errno.EPERM, errno.EROFS,
                       errno.ENOSPC, errno.EDQUOT, errno.EEXIST, errno.EFBIG}
_FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}  # a full disk, a quota, a file size limit


def build_parser() -> argparse.ArgumentParser:
    from gpunet._version import __version__

    parser = argparse.ArgumentParser(
        prog="gpunet", description="NVIDIA's GPUNet image classifiers: classify images, measure accuracy, "
                                   "inspect, convert, train, export, benchmark and serve models.")
    parser.add_argument("--version", action="version", version=f"gpunet {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module, function in COMMANDS:
        getattr(importlib.import_module(f"gpunet.cli.{module}"), function)(sub)
    return parser


def _download_paragraph(args: argparse.Namespace, exc: Exception) -> str:
    """One paragraph: what failed, where NVIDIA's weights come from, how to supply them offline."""
    from gpunet.errors import SettingError
    from gpunet.zoo import get_pretrained_config

    try:
        cfg = get_pretrained_config(getattr(args, "model", DEFAULT_MODEL))
    except SettingError:
        return f"gpunet: error: {exc}"
    reason = str(exc).split(f"{cfg.display_name} weights come from NGC")[0].strip()
    source = "" if cfg.url in reason else f" ({cfg.url})"
    return wrap(
        f"gpunet: error: {reason} {cfg.display_name}'s weights are NVIDIA's, published on NGC under NVIDIA's "
        f"terms{source}. To use them without network access, download that zip on another machine and pass "
        f"it with --weights PATH (or --weights URL), or set GPUNET_NGC_MIRROR to a folder or http(s) URL that "
        f"holds it under the name {cfg.filename}. Nothing was classified: gpunet never falls back to random "
        f"weights.")


def _random_weights_message(args: argparse.Namespace) -> str:
    return wrap(f"gpunet: error: no weights given for {args.model}: with random weights its labels would be "
                "meaningless. Use --pretrained (NVIDIA's NGC checkpoint, downloaded once), --weights PATH (a "
                "local checkpoint or URL), or --random-weights for a smoke test.")


def _run(args: argparse.Namespace) -> int:
    """Run the chosen command; turn user and environment errors into one message and an exit status."""
    from gpunet.errors import DownloadError, GPUNetError, RandomWeightsError

    try:
        return int(args.func(args))
    except RandomWeightsError:
        err(_random_weights_message(args))
        return EXIT_USAGE
    except CLIError as exc:
        err(f"gpunet: error: {exc}")
        return exc.code
    except DownloadError as exc:
        err(_download_paragraph(args, exc) if getattr(args, "pretrained", False) else f"gpunet: error: {exc}")
        return EXIT_USAGE
    except GPUNetError as exc:
        err(f"gpunet: error: {exc}")
        return exc.exit_code
    except OSError as exc:
        if exc.errno not in _ENVIRONMENT_ERRNOS and not isinstance(exc, (FileNotFoundError, NotADirectoryError)):
            raise
        err(f"gpunet: error: {_os_message(exc)}")
        return EXIT_USAGE


def _os_message(exc: OSError) -> str:
    """The error as Python words it, and for a full disk that earlier files were kept (gpunet writes atomically)."""
    text = str(exc)
    if exc.errno in _FULL_ERRNOS:
        text += " (disk full or file size limit reached: nothing was replaced, earlier files are as they were)"
    return text


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        return _run(args)
    except KeyboardInterrupt:
        err("gpunet: interrupted")
        return 130
    except BrokenPipeError:  # e.g. `gpunet predict ... | head`
        _silence_stdout()
        return EXIT_OK
    finally:
        root.removeHandler(handler)


def _silence_stdout() -> Any:
    try:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115
    except OSError:
        pass


if __name__ == "__main__":
    raise SystemExit(main())
