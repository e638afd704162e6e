"""The one record format of a run's results (metrics.json): what was measured, and how it was made.

Every tool that trains or evaluates and writes a results file (`colorlab train`, `colorlab
experiment`, tools/blotches.py, tools/classification_compare.py) starts its record with
`provenance`: the command that reproduces it, the commit, the device, the library versions
and the dates. Training time is `training_seconds`, summed from the histories' per-epoch
seconds: a run resumed five times still counts every epoch once, whereas a timer around one
call would count only the epochs that call trained.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import torch

from .atomic import atomic_write


def commit() -> str:
    """The repository's short commit hash, or "unknown" outside a git checkout."""
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: str | torch.device) -> str:
    """The device in words: the GPU's name, or "cpu (N cores)"."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} ({os.cpu_count()} cores)"


def now() -> str:
    """The time in UTC, as records write it: 2026-12-07T10:30:00Z."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def versions() -> dict[str, str]:
    from . import __version__

    return {"colorlab": __version__, "torch": torch.__version__, "python": platform.python_version()}


def command_line(program: str, argv: list[str] | None = None) -> str:
    """How to run `program` again with `argv` (sys.argv's arguments when None)."""
    import shlex

    return " ".join([program, shlex.join(sys.argv[1:] if argv is None else argv)]).strip()


def provenance(command: str, device: str | torch.device, started: str | None = None) -> dict:
    """The head of every record: command, commit, device, library versions, start and end times (UTC), and
    the date it was made (the day it finished)."""
    finished = now()
    return {"command": command, "commit": commit(), "device": device_name(device), "versions": versions(),
            "date": finished[:10], "started": started or finished, "finished": finished}


def training_seconds(histories: Mapping[str, object]) -> dict[str, float]:
    """Seconds of training per stage, summed from each history's per-epoch "seconds" (resumed epochs included)."""
    return {stage: round(sum(history["seconds"]), 1) for stage, history in histories.items()}


def write_record(folder: str | Path, record: Mapping, name: str = "metrics.json") -> Path:
    """Write `record` as `folder/name`, atomically: a crash leaves the old record or the new one."""
    path = Path(folder) / name
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "record") as tmp:
        tmp.write_text(json.dumps(dict(record), indent=1))
    return path


__all__ = ["command_line", "commit", "device_name", "now", "provenance", "training_seconds", "versions",
           "write_record"]
