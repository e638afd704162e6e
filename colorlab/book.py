"""What the chapters share besides the library: checking their parameters, and where their runs live.

Every chapter's `parameters` cell declares typed knobs (``size: int = 64``), which papermill
may override: ``papermill chapter.ipynb out.ipynb -p smoke false``. papermill's command line
converts only ``True``, ``False``, ``None`` and numbers; anything else arrives as a *string*, and
the string ``"false"`` is truthy. So the first code cell after the parameters calls
`check_parameters(globals())`, which compares every value with its declared type and range
before any download or training, and stops the chapter with one line naming the parameter,
the problem and the right spelling.
"""

from __future__ import annotations

import sys
import types
import typing
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from .data import SOURCES
from .models import AUTO, IMAGENET, check_size
from .runtime import pick_device

DEFAULT_RUN_ROOT = "runs/book"
COLAB_DRIVE = Path("/content/drive/MyDrive")  # where Colab's drive.mount("/content/drive") puts your files
PRETRAINED_CHOICES = (AUTO, IMAGENET, "none")


class ParameterError(ValueError):
    """A chapter parameter has the wrong type or value. Shown in a notebook as its one-line message."""

    def _render_traceback_(self) -> list[str]:
        # IPython calls this instead of printing a traceback: the message says everything, and a
        # traceback into colorlab's code would hide it from a reader who only mistyped a value.
        return [f"{type(self).__name__}: {self}"]


def _at_least(minimum: int) -> Callable[[Any], str | None]:
    return lambda value: None if value >= minimum else f"must be >= {minimum}"


def _raises(check: Callable[[Any], Any]) -> Callable[[Any], str | None]:
    """A range rule from a library function that raises on a bad value: its message is the problem."""
    def rule(value: Any) -> str | None:
        try:
            check(value)
        except (ValueError, RuntimeError) as err:
            return str(err).splitlines()[0]
        return None
    return rule


def _data_source(value: str) -> str | None:
    if value in SOURCES or Path(value).is_dir():
        return None
    return f"must be one of {', '.join(map(repr, SOURCES))} or an existing folder of images"


def _pretrained(value: str) -> str | None:
    if value in PRETRAINED_CHOICES or Path(value).is_file():
        return None
    return f"must be one of {', '.join(map(repr, PRETRAINED_CHOICES))} or a ResNet18 state-dict file"


# Range rules of the parameters the chapters share, checked once the type is right. A parameter
# not listed here is checked against its declared type only.
RULES: dict[str, Callable[[Any], str | None]] = {
    "size": _raises(check_size),
    "epochs": _at_least(1),
    "pretrain_epochs": _at_least(1),
    "n_images": _at_least(2),  # one training and one validation image at least
    "batch_size": _at_least(1),
    "seed": _at_least(0),
    "device": _raises(pick_device),  # also refuses a GPU this machine lacks, before any work
    "data": _data_source,
    "pretrained": _pretrained,
}


def _type_problem(name: str, value: Any, expected: Any) -> str | None:
    """None if `value` fits the annotation `expected` (bool, int, float, str, or a union of them)."""
    if typing.get_origin(expected) in (typing.Union, types.UnionType):  # e.g. `str | None`
        problems = [_type_problem(name, value, option) for option in typing.get_args(expected)]
        return None if None in problems else problems[0]
    if expected is type(None):
        return None if value is None else "must be None"
    if expected is bool:
        if isinstance(value, bool):
            return None
        if isinstance(value, str) and value.lower() in ("true", "false"):
            right = value.capitalize()
            return (f"must be True or False, not a string (papermill converts only True, False and None): "
                    f"write {right}, e.g. papermill -p {name} {right}")
        return f"must be True or False, not {type(value).__name__}"
    if expected is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif expected is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    else:
        ok = isinstance(value, expected)
    return None if ok else f"must be {expected.__name__}, not {type(value).__name__}"


def parameter_problems(values: Mapping[str, Any], declared: Mapping[str, Any]) -> list[str]:
    """One 'name=value: problem' line per parameter whose value does not fit its declared type or its range."""
    problems = []
    for name, expected in declared.items():
        if name not in values:
            continue
        value = values[name]
        problem = _type_problem(name, value, expected)
        if problem is None and name in RULES and value is not None:
            problem = RULES[name](value)
        if problem:
            problems.append(f"{name}={value!r}: {problem}")
    return problems


def check_parameters(namespace: Mapping[str, Any]) -> None:
    """Stop the chapter if a parameter has the wrong type or value; call it as `check_parameters(globals())`.

    The types are the annotations of the `parameters` cell (IPython keeps them in the
    notebook's ``__annotations__``; papermill's injected values carry none, so the declared
    types stay). Raises ParameterError listing every bad parameter, one clause each.
    """
    declared = namespace.get("__annotations__")
    if not declared:
        raise ParameterError("the parameters cell declares no types: write `size: int = 64`, not `size = 64`")
    problems = parameter_problems(namespace, declared)
    if problems:
        raise ParameterError("bad chapter parameter: " + "; ".join(problems))


def installed() -> str:
    """One line saying what runs this chapter: colorlab's version and place, torch's build, Python.

    Printed by every chapter's set-up cell, so that a Colab reader (whose install cell is quiet)
    and anyone reading an executed notebook can see which release produced its outputs.
    """
    import torch

    from . import __file__ as package_file, __version__

    python = ".".join(map(str, sys.version_info[:3]))
    return f"colorlab {__version__} ({Path(package_file).parent}), torch {torch.__version__}, Python {python}"


def resolve_run_root(root: str | Path = AUTO) -> Path:
    """Where the chapters keep their training runs: `root`, or for "auto" runs/book (relative to
    the chapter), or, in Colab with Google Drive mounted, a Drive folder that survives a runtime reset.

    Chapter 7 finds chapter 6's checkpoint there after a reset; a `colorlab train` run folder
    is reused by pointing `run_root` at the folder given to its `--run-root` (see `colorlab.recipes.run_dir`).
    """
    if str(root) != AUTO:
        return Path(root)
    if "google.colab" in sys.modules and COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "colorlab" / "runs"
    return Path(DEFAULT_RUN_ROOT)


__all__ = ["ParameterError", "RULES", "check_parameters", "installed", "parameter_problems", "resolve_run_root"]
