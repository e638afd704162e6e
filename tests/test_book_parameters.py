"""colorlab.book: the chapters' parameter check and run folder, without running a notebook."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from IPython.core.interactiveshell import InteractiveShell

from colorlab import book, runs

TYPES = {"size": int, "epochs": int, "n_images": int, "batch_size": int, "device": str, "data": str, "seed": int,
         "smoke": bool, "pretrained": str, "lr": float, "note": str | None}
GOOD = {"size": 64, "epochs": 1, "n_images": 16, "batch_size": 8, "device": "cpu", "data": "offline", "seed": 0,
        "smoke": True, "pretrained": "auto", "lr": 1, "note": None}


def _namespace(**changes) -> dict:
    return {"__annotations__": TYPES, **GOOD, **changes}


def test_good_values_pass():
    book.check_parameters(_namespace())
    book.check_parameters(_namespace(data=".", lr=0.5, note="x"))  # a folder; an int or float for a float


@pytest.mark.parametrize("text", ["false", "true", "FALSE"])
def test_a_string_where_a_bool_is_expected_names_the_parameter_and_the_spelling(text):
    with pytest.raises(book.ParameterError) as failure:
        book.check_parameters(_namespace(smoke=text))
    message = str(failure.value)
    assert f"smoke={text!r}: must be True or False" in message
    assert f"-p smoke {text.capitalize()}" in message


@pytest.mark.parametrize("name, value, message", [
    ("smoke", 1, "must be True or False, not int"),
    ("size", 65, "power of two"),
    ("size", 64.0, "must be int, not float"),
    ("size", True, "must be int, not bool"),
    ("epochs", 0, "must be >= 1"),
    ("n_images", 1, "must be >= 2"),
    ("seed", -1, "must be >= 0"),
    ("batch_size", "16", "must be int, not str"),
    ("device", "gpu", "'gpu' is not a device"),
    ("data", "cocoa", "must be one of 'offline', 'shared', 'coco' or an existing folder"),
    ("pretrained", "resnet", "must be one of 'auto', 'imagenet', 'none'"),
    ("lr", "0.1", "must be float, not str"),
    ("note", 3, "must be str, not int"),
])
def test_each_bad_value_is_named_with_its_problem(name, value, message):
    with pytest.raises(book.ParameterError, match="bad chapter parameter") as failure:
        book.check_parameters(_namespace(**{name: value}))
    assert f"{name}={value!r}: " in str(failure.value) and message in str(failure.value)


def test_every_problem_is_reported_at_once_on_one_line():
    with pytest.raises(book.ParameterError) as failure:
        book.check_parameters(_namespace(size=65, smoke="false", data="cocoa"))
    message = str(failure.value)
    assert "\n" not in message and all(f"{name}=" in message for name in ("size", "smoke", "data"))


def test_a_parameters_cell_without_types_is_refused():
    with pytest.raises(book.ParameterError, match="declares no types"):
        book.check_parameters(GOOD)


def test_ipython_shows_the_error_as_one_line_without_a_traceback(capsys):
    shell = InteractiveShell.instance()
    try:
        shell.run_cell("size: int = 64\nsmoke: bool = False")
        shell.run_cell("smoke = 'false'")  # what papermill's injected cell does with -p smoke false
        result = shell.run_cell("from colorlab.book import check_parameters\ncheck_parameters(globals())")
    finally:
        InteractiveShell.clear_instance()
    assert isinstance(result.error_in_exec, book.ParameterError)
    shown = [line for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert shown == [f"ParameterError: {result.error_in_exec}"]


def test_run_root_is_runs_book_by_default_and_an_explicit_folder_as_given(monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert runs.resolve_run_root() == Path("runs/book")
    assert runs.resolve_run_root("/tmp/my-runs") == Path("/tmp/my-runs")


def test_run_root_moves_to_google_drive_in_colab_when_it_is_mounted(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "google.colab", object())
    monkeypatch.setattr(runs, "COLAB_DRIVE", tmp_path / "MyDrive")
    assert runs.resolve_run_root() == Path("runs/book")  # not mounted: the runtime's disk
    (tmp_path / "MyDrive").mkdir()
    assert runs.resolve_run_root() == tmp_path / "MyDrive" / "colorlab" / "runs"


def test_installed_names_the_running_colorlab_and_torch():
    import torch

    import colorlab

    line = book.installed()
    assert "\n" not in line
    assert f"colorlab {colorlab.__version__} ({Path(colorlab.__file__).parent})" in line
    assert f"torch {torch.__version__}" in line
