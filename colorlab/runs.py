"""Run folders: where the chapters and `colorlab train --run-root` keep a recipe's checkpoints.

A run folder is named by the run's parameters, so that a chapter finds the run that an earlier
chapter (or the command line) made with the same settings and resumes it instead of training again.
"""

from __future__ import annotations

import sys
from pathlib import Path

from .models import AUTO

DEFAULT_RUN_ROOT = "runs/book"
COLAB_DRIVE = Path("/content/drive/MyDrive")  # where Colab's drive.mount("/content/drive") puts your files


def resolve_run_root(root: str | Path = AUTO) -> Path:
    """Where the chapters keep their training runs: `root`, or for "auto" runs/book (relative to
    the chapter), or, in Colab with Google Drive mounted, a Drive folder that survives a runtime reset.

    Chapter 7 finds chapter 6's checkpoint there after a reset; a `colorlab train` run folder
    is reused by pointing `run_root` at the folder given to its `--run-root` (see `run_dir`).
    """
    if str(root) != AUTO:
        return Path(root)
    if "google.colab" in sys.modules and COLAB_DRIVE.is_dir():
        return COLAB_DRIVE / "colorlab" / "runs"
    return Path(DEFAULT_RUN_ROOT)


def mount_drive() -> Path | None:
    """In Colab, mount Google Drive so that `run_root="auto"` keeps the runs there; elsewhere do nothing.

    A free Colab session ends after hours or when idle, and takes its files with it: a run kept on
    Drive is resumed by the next session instead of trained again. Mounting asks the reader for
    permission; a refusal or a failure is one line, and the runs then stay in the session.
    """
    if "google.colab" not in sys.modules:
        return None
    try:
        from google.colab import drive

        drive.mount(str(COLAB_DRIVE.parent))
    except Exception as err:  # refused, timed out, or no Drive for this account: training goes on without it
        print(f"Google Drive not mounted ({type(err).__name__}: {err}); this session's runs stay in the session")
        return None
    print(f"training runs are kept in {resolve_run_root()} on Google Drive")
    return COLAB_DRIVE


def run_dir(recipe: str, root: str | Path = AUTO, **params) -> Path:
    """A run folder named by its parameters, e.g. runs/book/resnet18-data=offline-n_images=64-seed=0-size=64.

    Chapters that train the same stage with the same parameters share its checkpoint, so
    when the book is built in order a later chapter resumes (= reuses) an earlier one's run.
    `root` "auto" is runs/book, or a Google Drive folder in Colab (`resolve_run_root`).
    """
    def tag(value) -> str:
        return Path(value).name if isinstance(value, (str, Path)) and ("/" in str(value)) else str(value)

    return resolve_run_root(root) / "-".join([recipe] + [f"{key}={tag(params[key])}" for key in sorted(params)])


def chapter_run_dir(recipe: str, root: str | Path, data: str, n_images: int | None, seed: int, size: int,
                    weights: str | None) -> Path:
    """The run folder chapters 5-8 use for these settings, so that they reuse a `colorlab train --run-root` run.

    The chapters name runs by their parameters; their `pretrained` is the recipe's `weights`
    ("none" for random init), and only the resnet18 runs carry it.
    """
    params = dict(data=data, n_images=n_images, seed=seed, size=size)
    if recipe == "resnet18":
        params["pretrained"] = "none" if weights is None else weights
    return run_dir(recipe, root, **params)


__all__ = ["COLAB_DRIVE", "chapter_run_dir", "resolve_run_root", "run_dir"]
