"""One error hierarchy: every error class is an SGNetError, user-input ones are UserInputErrors,
and the CLI shows user errors as a message (exit 2) but logs a bug's traceback (exit 1)."""

from __future__ import annotations

import ast
import importlib
import logging
from pathlib import Path

import numpy as np
import pytest
import tifffile

import napari_sgnet
import napari_sgnet.cli.main as cli_main
import napari_sgnet.io
from napari_sgnet.errors import (
    CorruptSlideError,
    Failure,
    OptionError,
    SGNetError,
    SlideError,
    UserInputError,
    describe_failure,
    report_failure,
)

PACKAGE = Path(napari_sgnet.__file__).resolve().parent

#: Errors raised for control flow or internal faults, not for something the user can fix.
NOT_USER_INPUT = {"EvalCancelledError", "_CancelledError", "GeneratorCrashError"}


def _error_classes() -> dict[str, type[BaseException]]:
    """Every exception class defined in the package (found in the source, then imported)."""
    found: dict[str, type[BaseException]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        names = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef) and node.name.endswith(("Error", "Exception"))
        ]
        if not names:
            continue
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        module = importlib.import_module(".".join(rel.parts).removesuffix(".__init__"))
        for name in names:
            cls = getattr(module, name)
            assert isinstance(cls, type) and issubclass(cls, BaseException), name
            found[f"{module.__name__}.{name}"] = cls
    return found


def test_every_error_class_is_an_sgnet_error() -> None:
    classes = _error_classes()
    # the ones the brief names, so that a rename cannot make this test pass vacuously
    short = {key.rsplit(".", 1)[1] for key in classes}
    assert {
        "ConfigError", "PaletteError", "SynthConfigError", "CheckpointError", "RequestError",
        "DataError", "PatchFolderError", "TrainError", "TrainStateError", "FinetuneError",
        "ReviewError", "SlideError", "StoreError", "DeviceError", "OptionError",
    } <= short  # fmt: skip
    for key, cls in classes.items():
        assert issubclass(cls, SGNetError), f"{key} is not an SGNetError"
        if key.rsplit(".", 1)[1] in NOT_USER_INPUT:
            assert not issubclass(cls, UserInputError), key
        elif cls is not SGNetError:
            assert issubclass(cls, UserInputError), f"{key} should be a UserInputError"
            assert issubclass(cls, ValueError), f"{key}: callers catching ValueError break"


def test_review_error_stays_a_runtime_error() -> None:
    from napari_sgnet.app.review import RegionTooLargeError, ReviewError

    assert issubclass(ReviewError, RuntimeError) and issubclass(RegionTooLargeError, ReviewError)


def test_describe_failure_kinds() -> None:
    user = describe_failure(CorruptSlideError("a.svs", "truncated"))
    assert user == Failure("a.svs: truncated", "user") and user.is_user_error
    system = describe_failure(PermissionError(13, "Permission denied", "out.zarr"))
    assert system.kind == "system" and not system.is_user_error
    assert "out.zarr" in system.message and "bug" not in system.message
    bug = describe_failure(ValueError("operands could not be broadcast"))
    assert bug.kind == "bug" and "bug" in bug.message
    assert "ValueError: operands could not be broadcast" in bug.message
    assert describe_failure(RuntimeError()).message.endswith("RuntimeError")


def test_report_failure_logs_only_what_is_not_a_user_error(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("napari_sgnet.test")
    with caplog.at_level(logging.DEBUG, logger="napari_sgnet.test"):
        failure = report_failure(OptionError("lr must be positive"), log, "train")
    assert failure.message == "lr must be positive" and caplog.records == []
    bug = KeyError("tile")
    try:
        raise bug
    except KeyError as exc:
        with caplog.at_level(logging.DEBUG, logger="napari_sgnet.test"):
            failure = report_failure(exc, log, "predict x.svs")
    assert failure.kind == "bug"
    (record,) = caplog.records
    assert record.levelno == logging.ERROR and record.getMessage().startswith("predict x.svs: ")
    assert record.exc_info is not None and record.exc_info[1] is bug
    assert "Traceback" in caplog.text and "raise bug" in caplog.text


# ----------------------------------------------------------------------------- CLI


@pytest.fixture
def info(monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    monkeypatch.setattr(cli_main, "SUBCOMMANDS", ("info",))
    return lambda *args: cli_main.main(["info", *map(str, args)])


def _truncated_tiff(path: Path) -> Path:
    img = np.random.default_rng(1).integers(0, 255, (512, 512, 3), dtype=np.uint8)
    tifffile.imwrite(path, img, tile=(256, 256), compression="zlib", photometric="rgb")
    data = path.read_bytes()
    path.write_bytes(data[:40])  # the header and the start of the IFD only
    return path


def _lying_header(path: Path) -> Path:
    # a little-endian TIFF header whose first IFD lies far past the end of the file
    path.write_bytes(b"II*\x00" + (2**31).to_bytes(4, "little") + b"\x00" * 64)
    return path


def _text_named_svs(path: Path) -> Path:
    path.write_text("this is not a slide\n" * 20)
    return path


@pytest.mark.parametrize("make", [_truncated_tiff, _lying_header, _text_named_svs])
def test_cli_bad_slide_is_a_message_naming_the_file(
    make,  # type: ignore[no-untyped-def]
    info,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    bad = make(tmp_path / f"{make.__name__.strip('_')}.svs")
    with caplog.at_level(logging.DEBUG):
        assert info(bad) == cli_main.EXIT_BAD_INPUT == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and bad.name in err
    assert "Traceback" not in err and "bug" not in err
    assert not [r for r in caplog.records if r.exc_info]


def test_cli_bad_option_value_is_a_user_error(
    info,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    slide = tmp_path / "ok.tif"
    tifffile.imwrite(slide, np.zeros((64, 64, 3), np.uint8), photometric="rgb")
    assert info(slide, "--mpp", "-1") == cli_main.EXIT_BAD_INPUT
    assert "--mpp must be between 0.05 and 100" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bug",
    [RuntimeError("index 7 out of range"), ValueError("could not broadcast (3,) into (4,)")],
    ids=["RuntimeError", "bare ValueError"],
)
def test_cli_internal_bug_logs_the_traceback_and_exits_1(
    bug: Exception,
    info,  # type: ignore[no-untyped-def]
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def broken_open_pyramid(*args: object, **kwargs: object) -> None:
        raise bug

    monkeypatch.setattr(napari_sgnet.io, "open_pyramid", broken_open_pyramid)
    with caplog.at_level(logging.ERROR):
        assert info(tmp_path / "any.svs") == cli_main.EXIT_ERROR == 1
    err = capsys.readouterr().err
    assert "bug" in err and f"{type(bug).__name__}: {bug}" in err
    assert err.strip() != f"error: {bug}"  # not shown as if it were the user's mistake
    records = [r for r in caplog.records if r.exc_info]
    assert records and records[0].exc_info[1] is bug  # type: ignore[index]
    assert "napari-sgnet info" in records[0].getMessage()
    assert "broken_open_pyramid" in caplog.text  # the traceback reaches the log


def test_predict_reports_a_bug_per_slide_and_goes_on(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    from napari_sgnet.cli import predict_cmd

    calls: list[Path] = []

    def run_one(slide: Path, args: object) -> dict[str, object]:
        calls.append(slide)
        if slide.name == "bug.svs":
            raise ZeroDivisionError("division by zero")
        raise CorruptSlideError(slide, "not a valid TIFF")

    monkeypatch.setattr(cli_main, "SUBCOMMANDS", ("predict",))
    monkeypatch.setattr(predict_cmd, "_run_one", run_one)
    with caplog.at_level(logging.ERROR):
        code = cli_main.main(["predict", "bug.svs", "bad.svs", "--out", str(tmp_path)])
    assert [p.name for p in calls] == ["bug.svs", "bad.svs"]
    assert code == cli_main.EXIT_BAD_INPUT  # the worst over the slides, as before
    err = capsys.readouterr().err
    assert "error: bug.svs: internal error" in err and "ZeroDivisionError" in err
    assert "error: bad.svs: not a valid TIFF" in err
    logged = [r.exc_info[1] for r in caplog.records if r.exc_info]  # type: ignore[index]
    assert len(logged) == 1 and isinstance(logged[0], ZeroDivisionError)  # not the bad slide

def test_user_input_error_is_still_a_value_error() -> None:
    with pytest.raises(ValueError, match="x.svs: empty"):
        raise SlideError("x.svs", "empty")


# ----------------------------------------------------------------------------- dock


@pytest.mark.parametrize(
    ("exc", "user"),
    [(OptionError("holdout_fraction must lie in (0, 1)"), True), (IndexError("list index"), False)],
)
def test_finetune_dock_shows_user_errors_and_logs_bugs(
    exc: Exception,
    user: bool,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("qtpy")
    from napari_sgnet._qt import finetune_widget

    shown: list[str] = []
    texts: list[str] = []
    monkeypatch.setattr(finetune_widget, "show_error", shown.append)

    class Label:
        setText = staticmethod(texts.append)  # noqa: N815

    fake = type("Widget", (), {"status_label": Label()})()
    with caplog.at_level(logging.ERROR):
        finetune_widget.FinetuneWidget._on_errored(fake, exc)  # type: ignore[arg-type]
    assert shown == texts and len(shown) == 1
    if user:
        assert shown == [str(exc)] and not caplog.records
    else:
        assert "bug" in shown[0] and "IndexError: list index" in shown[0]
        assert [r.exc_info[1] for r in caplog.records if r.exc_info] == [exc]  # type: ignore[index]
