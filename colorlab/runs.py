"""Run folders: where the chapters and `colorlab train --run-root` keep a recipe's checkpoints.

A run folder is named by the run's parameters, so that a chapter finds the run that an earlier
chapter (or the command line) made with the same settings and resumes it instead of training again.

`colorlab train` and `colorlab experiment` also keep two small files in their folder:

- `run.json`, the run's specification (`RunSpec`): every setting that decides what the trained
  weights are. `--resume` with another value of any of them is refused in one line naming
  them, since the result would claim settings its first epochs did not use. Epochs may grow.
  `colorlab.recipes.run` also stores it in every checkpoint it writes, and `fit` compares it
  before resuming from one.
- `.lock`, an advisory lock (`fcntl.flock`) held while a process writes the folder, with that
  process's id in it: a second run into the same folder stops at once with one line. The kernel
  drops the lock of a process that dies (even by SIGKILL); the next run takes it over and says so.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
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


# Upper bounds of a run's counts: far above any real run, low enough that a mistyped 10**20 is refused at once
# instead of failing deep inside a sampler or the RNG with an obscure message.
LIMITS = {"batch_size": 1 << 16, "epochs": 10**6, "n_images": 10**9, "seed": 2**63 - 1}
RUN_FILE = "run.json"
LOCK_FILE = ".lock"


@dataclass(frozen=True)
class RunSpec:
    """What decides a run's trained weights: data, split, image sizes, recipe and its stages' settings.

    Epochs are not part of it: a run may be resumed with more. Local folders and files are
    absolute paths, so the same folder named from another directory is the same run.
    """

    recipe: str
    data: str
    n_images: int | None
    size: int
    batch_size: int
    seed: int
    weights: str | None
    gan_mode: str
    lambda_l1: float
    init: str | None
    max_side: int | None  # the side images are decoded at: it decides which huge photos the split keeps
    world_size: int = 1

    @classmethod
    def of(cls, settings: Mapping, world_size: int = 1) -> "RunSpec":
        """The specification of a run's `settings` (e.g. `asdict(RunConfig)`); unknown keys are ignored."""
        values = {f.name: settings.get(f.name) for f in fields(cls) if f.name != "world_size"}
        for key in ("data", "weights", "init"):
            value = values[key]
            if isinstance(value, str) and Path(value).exists():  # the same folder named from another directory
                values[key] = str(Path(value).resolve())
        return cls(**values, world_size=world_size)

    def as_dict(self) -> dict:
        return asdict(self)

    def folder(self, root: str | Path) -> Path:
        """The run folder this specification names under `root`: the one the chapters and `colorlab train
        --run-root` share (`chapter_run_dir`: recipe, data, images, seed, size, and the resnet18 encoder's start)."""
        return chapter_run_dir(self.recipe, root, self.data, self.n_images, self.seed, self.size, self.weights)


def spec_differences(recorded: Mapping, current: Mapping) -> list[str]:
    """'key X there, Y now' for every setting both specifications have and that differs."""
    return [f"{key} {recorded[key]!r} there, {current[key]!r} now" for key in current
            if key in recorded and recorded[key] != current[key]]


def check_resume(folder: str | Path, identity: Mapping) -> None:
    """Refuse (ValueError, one line) to resume the run in `folder` with settings other than its recorded ones.

    The record is `run.json`, or, for a run made before it existed, the config in its metrics.json.
    A folder with neither has nothing to compare with and is accepted (its checkpoints' own
    stage checks still apply).
    """
    folder = Path(folder)
    recorded = _recorded_identity(folder)
    if recorded is None:
        return
    if differences := spec_differences(recorded, identity):
        raise ValueError(f"cannot resume {folder}/: it was started with other settings ({'; '.join(differences)}); "
                         "resume with the same settings, or give another --out for a new run")


def _recorded_identity(folder: Path) -> dict | None:
    try:
        if (folder / RUN_FILE).is_file():
            return json.loads((folder / RUN_FILE).read_text())
        if (folder / "metrics.json").is_file():
            record = json.loads((folder / "metrics.json").read_text())
            spec = RunSpec.of(record["config"], record.get("world_size", 1)).as_dict()
            return {key: value for key, value in spec.items() if key in record["config"] or key == "world_size"}
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{folder}/{RUN_FILE}: unreadable record of the run's settings ({err}); "
                         "remove it to resume without the check, or give another --out") from None
    return None


def record_identity(folder: str | Path, identity: Mapping) -> None:
    """Write the run's identity into `folder/run.json` (a new run; a resumed one keeps its record)."""
    Path(folder, RUN_FILE).write_text(json.dumps(dict(identity), indent=1))


class RunLockedError(ValueError):
    """Another process is writing this run folder."""


@contextmanager
def run_lock(folder: str | Path, who: str) -> Iterator[Path]:
    """Hold the advisory lock of run folder `folder` while the block runs (creating the folder).

    Another holder: `RunLockedError` at once, naming its process. A lock file left by a process
    that no longer runs (killed) is taken over with one line on stderr prefixed by `who`. If the
    block fails and the folder was created here and holds only the lock and `run.json`, it is removed
    again: a run refused before any work leaves no folder behind.
    """
    folder = Path(folder)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / LOCK_FILE
    with open(path, "a+") as lock:
        if not _try_lock(lock):
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            raise RunLockedError(f"{folder}/ is being written by another run (process {holder}); wait for it to "
                                 "finish, or give another --out")
        lock.seek(0)
        previous = lock.read().strip()
        if previous.isdigit() and int(previous) != os.getpid():
            print(f"{who}: took over the lock of {folder}/ from process {previous}, which no longer runs "
                  "(killed?)", file=sys.stderr)
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        try:
            yield folder
        except BaseException:
            if created and {p.name for p in folder.iterdir()} <= {LOCK_FILE, RUN_FILE}:
                shutil.rmtree(folder, ignore_errors=True)
            raise
        finally:
            if path.exists():
                lock.seek(0)
                lock.truncate()  # a clean end: no process id left for the next run to report
                lock.flush()


def _try_lock(file) -> bool:
    """Take an exclusive advisory lock without waiting; True where the platform has no flock (no lock)."""
    try:
        import fcntl
    except ImportError:  # Windows: no advisory lock; runs into one folder are the user's to avoid
        return True
    try:
        fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


__all__ = ["COLAB_DRIVE", "LIMITS", "RunLockedError", "RunSpec", "chapter_run_dir", "check_resume", "record_identity",
           "resolve_run_root", "run_dir", "run_lock", "spec_differences"]
