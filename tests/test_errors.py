"""One error base for user and environment problems; the CLI prints those in one line and nothing else."""

from __future__ import annotations

import argparse
import inspect
import warnings
from pathlib import Path

import pytest
from _helpers import rgb_array, run_cli
from PIL import Image

from gpunet import errors
from gpunet.cli import _run

ERRORS = [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, Exception)]


def test_every_error_is_a_gpunet_error_and_keeps_its_builtin_kind() -> None:
    assert len(ERRORS) >= 15
    for cls in ERRORS:
        assert issubclass(cls, errors.GPUNetError), cls
    for cls in (errors.ArchitectureError, errors.WeightsError, errors.SettingError, errors.ExportError,
                errors.RecipeError, errors.SearchSpaceError, errors.TeacherError):
        assert issubclass(cls, ValueError), cls  # `except ValueError` in user code keeps working
    for cls in (errors.DownloadError, errors.TrainError, errors.DistributedError, errors.SearchError,
                errors.LatencyError):
        assert issubclass(cls, RuntimeError), cls


def _namespace(exc: BaseException) -> argparse.Namespace:
    def fail(_args: argparse.Namespace) -> int:
        raise exc

    return argparse.Namespace(func=fail, model="gpunet_0", pretrained=False)


def test_cli_reports_a_gpunet_error_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_namespace(errors.SettingError("--top-k: expected a positive integer, got -1"))) == 2
    assert capsys.readouterr().err == "gpunet: error: --top-k: expected a positive integer, got -1\n"


def test_cli_reports_environment_errors_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert _run(_namespace(PermissionError(13, "Permission denied", "/ro/out.onnx"))) == 2
    assert capsys.readouterr().err == "gpunet: error: [Errno 13] Permission denied: '/ro/out.onnx'\n"


@pytest.mark.parametrize("exc", [ValueError("a bug"), KeyError("x"), OSError(5, "I/O error")])
def test_cli_lets_unexpected_errors_through_with_their_traceback(exc: Exception) -> None:
    """A bug is not dressed up as a usage error (before: any ValueError became `gpunet: error:`)."""
    with pytest.raises(type(exc)):
        _run(_namespace(exc))


def test_unknown_device_is_one_line_in_a_real_process(tmp_path: Path) -> None:
    """`--device tpu` used to end in a traceback from torch."""
    Image.fromarray(rgb_array(40, 30, seed=0)).save(tmp_path / "a.png")
    result = run_cli(["predict", str(tmp_path), "--model", "gpunet_0", "--random-weights", "--device", "tpu"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("gpunet: error: device 'tpu': expected")
    assert "Traceback" not in result.stderr


def test_old_weights_names_still_resolve_with_a_warning() -> None:
    import gpunet
    from gpunet import weights

    with pytest.deprecated_call():
        assert weights.convert is gpunet.convert
    with pytest.deprecated_call():
        assert weights.load_weights is gpunet.load_weights
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AttributeError):
            weights.no_such_name  # noqa: B018
