"""What the chapters share besides the library: their parameters, their data, and which model their results show.

Parameters. Every chapter's `parameters` cell declares typed knobs (``size: int = 64``), which
papermill may override: ``papermill chapter.ipynb out.ipynb -p smoke false``. papermill's command
line converts only ``True``, ``False``, ``None`` and numbers; anything else arrives as a *string*,
and the string ``"false"`` is truthy. So the first code cell after the parameters calls
`check_parameters(globals())`, which compares every value with its declared type and range
before any download or training, and stops the chapter with one line naming the parameter,
the problem and the right spelling.

Published model or own run. A chapter teaches the mechanics on a short training run of its own
(loss curves, exercises), but a short CPU run cannot show what a method achieves. So the
pictures and numbers meant to show that come from the published model of the chapter's stage
(`colorlab.hub`) when there is one, which the chapter says in one line; otherwise from its own
short run, said just as plainly, with the way to get the real ones. `published_model` is that
decision, for every chapter; the chapters' `published` parameter steers it: "auto" (the
published model: its local file, else downloaded), "none" (always the chapter's own run), or a
model name (that model for its stage).

Data. `load_split_or_offline` is the data choice of the chapters that train nothing: the
source asked for, else scikit-image's offline photos, said in one line.

The book itself. `find_book` locates the chapters (from the working directory: an installed
package has no book beside it), `declared_parameters` is the one reader of a notebook's
`parameters` cell (the book build and the grader pass a chapter only the names it declares),
and `SMOKE_PARAMETERS` is the smallest run of every cell, used by both.
"""

from __future__ import annotations

import ast
import json
import re
import sys
import types
import typing
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from . import hub
from .data import SOURCES, DataUnavailableError, load_split, val_batches
from .io import SkippedImageWarning, list_images, scan_images
from .models import AUTO, IMAGENET, check_size
from .published_data import eval_photos_dir
from .recipes import Trained, train_recipe
from .runs import chapter_run_dir
from .runtime import pick_device

PRETRAINED_CHOICES = (AUTO, IMAGENET, "none")
# The smallest run that executes every cell of every chapter on a CPU in seconds: CI's book build
# (`tools/build_book.py --smoke`) and the grader (`colorlab.grading`) pass each chapter the ones it declares.
SMOKE_PARAMETERS: dict[str, Any] = {
    "size": 64,
    "epochs": 1,
    "pretrain_epochs": 1,
    "n_images": 16,
    "batch_size": 8,
    "device": "cpu",
    "data": "offline",
    "seed": 0,
    "smoke": True,
}


def find_book(book: str | Path | None = None) -> Path:
    """The folder of the book's chapters: `book` when given, else ``book/`` of the repository around the cwd.

    Searched from the working directory up, for a folder holding ``_toc.yml`` and ``book/`` (the
    repository root): a pip-installed colorlab has no book beside its code, so the package's own
    location says nothing. Raises FileNotFoundError with a one-line message otherwise.
    """
    if book is not None:
        if not Path(book).is_dir():
            raise FileNotFoundError(f"{book} is not a folder of chapters")
        return Path(book)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "_toc.yml").is_file() and (folder / "book").is_dir():
            return folder / "book"
    raise FileNotFoundError(f"no book here: {here} is not inside a colorlab repository (a folder with _toc.yml "
                            "and book/); run from the repository or name the chapters' folder (--book DIR)")


def recorded_results(name: str) -> Path | None:
    """The repository's `results/NAME` folder (a run recorded and committed with the book), or None.

    Found beside the book (`find_book`: the working directory or a folder above it holding
    `_toc.yml` and `book/`; tools/build_book.py stages `results/` with the chapters), never beside
    the installed package: a pip install or a Colab session has no results, and says so.
    """
    try:
        folder = find_book().parent / "results" / name
    except FileNotFoundError:
        return None
    return folder if folder.is_dir() else None


def declared_parameters(notebook: str | Path | Mapping[str, Any]) -> list[str]:
    """The names the notebook's ``parameters``-tagged cell assigns at top level (``size: int = 64``), in order.

    `notebook` is a path or a notebook already read (a dict, or nbformat's node). No parameters
    cell, or one that is not valid Python, declares nothing: the chapter then gets no override,
    and executing it shows the error where it is.
    """
    nb = json.loads(Path(notebook).read_text(encoding="utf-8")) if isinstance(notebook, (str, Path)) else notebook
    cell = next((cell for cell in nb["cells"] if "parameters" in cell.get("metadata", {}).get("tags", [])), None)
    if cell is None:
        return []
    source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    assignments = [node for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))]
    targets = [target for node in assignments
               for target in (node.targets if isinstance(node, ast.Assign) else [node.target])]
    names = [name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)]
    return sorted(set(names), key=names.index)


def load_split_or_offline(data: str, n_images: int, seed: int) -> tuple[list[Path], list[Path], str]:
    """(train files, validation files, source used): the chapter's `data`, or "offline" when it is not reachable here.

    The chapters that train nothing (1 to 4) must run anywhere, so a COCO download that fails
    offline falls back to scikit-image's photos, and the chapter says so in one line.
    """
    try:
        return (*load_split(data, n_images, seed=seed), data)
    except DataUnavailableError as err:
        print(f"data={data!r} is not available here, so this chapter uses data='offline': {' '.join(str(err).split())}")
        return (*load_split("offline", n_images, seed=seed), "offline")


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


def _published(value: str) -> str | None:
    if value in ("auto", "none") or value in hub.MODELS:
        return None
    return f"must be 'auto', 'none' or a published model ({', '.join(hub.MODELS)}; see `colorlab models`)"


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
    "published": _published,
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


# The Colab line of every chapter's set-up cell, as it stands in the notebook's JSON text.
_INSTALL = re.compile(r'(    %pip install -q \\")[^\\"]*(\\")')


def install_requirement(version: str | None = None) -> str:
    """What a chapter's Colab cell installs: the released library the book was built from, by its index name."""
    from . import DISTRIBUTION, __version__

    return f"{DISTRIBUTION}=={version or __version__}"


def write_install_version(notebook: str | Path, version: str | None = None) -> bool:
    """Make `notebook`'s Colab install line install `version` (default: this library's); True if it changed.

    `tools/release.py bump` writes it into the committed chapters and `tools/build_book.py` into
    the copies it executes, so a notebook always installs the library that produced its outputs.
    The file is edited as text, one line, so nothing else in it changes.
    """
    path = Path(notebook)
    text = path.read_text(encoding="utf-8")
    new, count = _INSTALL.subn(lambda m: f"{m[1]}{install_requirement(version)}{m[2]}", text)
    if count != 1:
        raise ValueError(f"{path}: expected one `%pip install -q \"...\"` line in the set-up cell, found {count}")
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


def installed() -> str:
    """One line saying what runs this chapter: colorlab's version and place, torch's build, Python.

    Printed by every chapter's set-up cell, so that a Colab reader (whose install cell is quiet)
    and anyone reading an executed notebook can see which release produced its outputs.
    """
    from . import __file__ as package_file, __version__

    python = ".".join(map(str, sys.version_info[:3]))
    return f"colorlab {__version__} ({Path(package_file).parent}), torch {torch.__version__}, Python {python}"


SHOWCASE_PHOTOS = 32  # validation photos a chapter shows a published model on (all of them in chapter 8)


@dataclass
class Showcase:
    """The model whose pictures and numbers a chapter shows for a stage, and on which photos."""

    model: nn.Module
    label: str  # "published model NAME" or "this chapter's short run": used in the chapter's titles
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # validation (L, ab) batches
    photos: str  # what those photos are
    published: bool


@dataclass(frozen=True)
class Published:
    """A published model a chapter shows instead of its own run: its name and its checked file."""

    name: str
    file: Path

    def load(self, device: str | torch.device = "cpu") -> nn.Module:
        return hub.load_pretrained(self.name, device, path=self.file)


def _stage_candidates(stage: str, published: str, size: int) -> tuple[list[str], str]:
    """(published models that may stand for `stage`, most preferred first; why there is none when empty)."""
    if published == "none":
        return [], "published='none'"
    if published != "auto":
        model = hub.get(published)
        if model.name in hub.stage_models(stage):  # a name of another stage leaves this stage to "auto"
            if model.spec["size"] != size:
                raise ValueError(f"published={published!r} is a {model.spec['size']} px model; "
                                 f"run the chapter with size={model.spec['size']}")
            return [model.name], ""
    same_size = hub.stage_models(stage, size)
    if not same_size:
        return [], (f"no published model of this stage for {size} px; published ones: "
                    f"{', '.join(hub.stage_models(stage)) or 'none'}")
    return same_size, ""


def published_model(stage: str, published: str, size: int) -> Published | None:
    """The published model that stands for a chapter's `stage`, or None for the chapter's own run.

    The one answer to "the published model, or this chapter's own run", for every chapter:
    `published` is "auto" (the stage's preferred published model of this image size), "none"
    (always the chapter's own run) or a model name (that one, for its stage). The file is the
    local one when there is one (`hub.search_dirs`: $COLORLAB_MODELS, ../shared/models, the
    cache), otherwise it is downloaded into the cache by `hub.fetch_pretrained` (progress bar,
    sha256 checked, renamed into place only when complete). Offline, or when the file is damaged,
    the chapter falls back to its own run. Prints one line in every case: which model, and
    whether it was downloaded; or why the chapter shows its own run.
    """
    candidates, why = _stage_candidates(stage, published, size)
    if not candidates:
        print(f"{stage}: this chapter's own run ({why})")
        return None
    name = next((name for name in candidates if hub.is_available(name)), candidates[0])
    downloaded = not hub.is_available(name)
    try:
        file = hub.fetch_pretrained(name)
    except hub.PublishedModelError as err:
        problem = " ".join(str(err).split("; either download")[0].split())  # the problem, not hub's ways out
        print(f"{stage}: this chapter's own run, since the published model could not be had ({problem}; "
              f"`colorlab models fetch {name}` retries, published='none' skips it)")
        return None
    how = f"; downloaded into {file.parent}, sha256 checked" if downloaded else ""
    print(f"{stage}: the published model {hub.get(name).describe()}{how}")
    return Published(name, file)


def showcase(stage: str, published: str, trained: nn.Module, val: list, size: int,
             device: str | torch.device = "cpu") -> Showcase:
    """The published model of `stage` (`published_model`; on the held-out photos when they can be had), else `trained`."""
    chosen = published_model(stage, published, size)
    if chosen is None:
        return Showcase(trained, "this chapter's short run", val, "this chapter's validation images", False)
    batches, photos = held_out_batches(size, device, SHOWCASE_PHOTOS) or (val, "this chapter's validation images")
    return Showcase(chosen.load(device), f"published model {chosen.name}", batches, photos, True)


def held_out_batches(size: int, device: str | torch.device, n_photos: int | None = None) -> tuple[list, str] | None:
    """(batches, description) of the evaluation photos (COCO val2017), or None when they cannot be had.

    Found by `published_data.eval_photos_dir`: ../shared/data, else the release asset in the cache,
    else downloaded now. The published models never saw them. Grayscale photos are left out, as in training.
    """
    root = eval_photos_dir()
    if root is None:
        return None
    with warnings.catch_warnings():  # the grayscale ones are expected, and said in the description
        warnings.simplefilter("ignore", SkippedImageWarning)
        files = scan_images(list_images(root / "photos" / "val")).kept[:n_photos]
    return val_batches(files, size, device), f"{len(files)} held-out photos of COCO val2017 ({root / 'photos' / 'val'})"


# --- The chapters' training runs: the published model, else resume the run folder's checkpoint, else train ---


def chapter_weights(pretrained: str, smoke: bool) -> str | None:
    """The ResNet18 encoder weights of a chapter's `pretrained` parameter; a smoke run never downloads."""
    return None if smoke or pretrained == "none" else pretrained


def train_chapter(recipe: str, train_files: list[Path], *, epochs: Mapping[str, int], size: int, batch_size: int,
                  seed: int, data: str, n_images: int | None, run_root: str, device: str | torch.device,
                  pretrained: str = "none", smoke: bool = False, stages: tuple[str, ...] | None = None,
                  generator: nn.Module | None = None) -> Trained:
    """Train (or resume) `stages` of `recipe` in the run folder chapters 5-8 share for these parameters.

    The same `colorlab.recipes.train_recipe` as `colorlab train`, with its image cache; the run
    folder (`colorlab.runs.chapter_run_dir`) is the one `colorlab train --run-root` writes, so a
    chapter resumes a command-line run or an earlier chapter's instead of training again.
    Prints one line per stage: how many epochs it has, and how long they trained in all (resumed ones included).
    """
    run = chapter_run_dir(recipe, run_root, data, n_images, seed, size, pretrained)
    trained = train_recipe(recipe, train_files, run, stages=stages, generator=generator, epochs=epochs, size=size,
                           batch_size=batch_size, seed=seed, weights=chapter_weights(pretrained, smoke),
                           device=device, progress=False)
    for stage, history in trained.histories.items():
        print(f"{recipe} {stage}: {len(history)} epoch(s) in {trained.checkpoints[stage]} "
              f"({sum(history['seconds']):.0f} s of training in all)")
    return trained


def published_or_train(stage: str, published: str, size: int, train: Callable[[], nn.Module],
                       device: str | torch.device = "cpu") -> nn.Module:
    """The published model of `stage` (`published_model`: local, else downloaded), else `train()`.

    The pattern of the UvA deep-learning notebooks: a chapter that needs a trained model, not the
    training itself, does not spend minutes (or, at the reference size in Colab, hours) on what has
    been trained already. `train` is a chapter's `train_chapter` call, which resumes its run
    folder's checkpoint when there is one and trains otherwise, and prints which.
    """
    chosen = published_model(stage, published, size)
    return train() if chosen is None else chosen.load(device)


__all__ = ["SMOKE_PARAMETERS", "ParameterError", "RULES", "Showcase", "chapter_weights", "check_parameters", "recorded_results",
           "declared_parameters", "find_book", "held_out_batches", "install_requirement", "installed", "load_split_or_offline",
           "parameter_problems", "Published", "published_model", "published_or_train", "showcase", "train_chapter",
           "write_install_version"]
