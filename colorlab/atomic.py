"""Writing a file so that readers only ever see the old version or the complete new one.

Checkpoints and image caches are large: a disk that fills up, a SIGKILL or a power cut in
the middle of a write must neither destroy the previous file nor leave a half-written one
under the real name, nor pile up temporary files nobody removes. `atomic_write` gives that:

- the data goes to ``.<name>.tmp-<pid>`` beside the target and is fsync'ed (else a power cut
  can keep the rename but lose the data: an empty file under the real name), then it is
  renamed over the target and the folder is fsync'ed (so that the rename itself is durable);
- on any error the temporary file is removed; a system error is re-raised as `WriteError`
  (an `OSError` with one line naming the target and the cause);
- temporary files of the same target left by processes that no longer exist (killed
  while writing) are removed before a new write starts.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class WriteError(OSError):
    """A file could not be written; the previous version, if any, is untouched and no temporary file is left."""


def temp_path(path: Path, pid: int | None = None) -> Path:
    """The temporary name `atomic_write` uses for `path` in process `pid` (default: this one)."""
    return path.with_name(f".{path.name}.tmp-{os.getpid() if pid is None else pid}")


def remove_stale_temp_files(path: Path) -> list[Path]:
    """Delete the temporary files of `path` whose writing process is gone; returns what was removed."""
    removed = []
    for candidate in path.parent.glob(f".{path.name}.tmp-*"):
        pid = candidate.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _process_exists(int(pid)):
            candidate.unlink(missing_ok=True)
            removed.append(candidate)
    return removed


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only checks that the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _os_error(err: BaseException | None) -> OSError | None:
    """The OSError behind `err`, if any: torch reports a full disk as a RuntimeError raised while handling it."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, OSError) and err.errno is not None:
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


@contextmanager
def atomic_write(path: str | Path, what: str = "file") -> Iterator[Path]:
    """Yield a temporary path to write into; on success it becomes `path`, durably.

    Any exception inside the block (including KeyboardInterrupt) removes the temporary file;
    an operating-system error (disk full, permission denied, even when torch wraps it in a
    RuntimeError) becomes a `WriteError` "<path>: could not write the <what> (<cause>); ...",
    and any other exception passes through unchanged.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(path)
    tmp = temp_path(path)
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    except Exception as err:
        system = _os_error(err)
        if system is None:  # not about writing (e.g. a bad input file): the caller's own error
            raise
        kept = "the previous one is kept" if path.exists() else "nothing was written"
        error = WriteError(f"{path}: could not write the {what} ({os.strerror(system.errno)}); {kept}")
        error.errno = system.errno
        raise error from err
    finally:
        tmp.unlink(missing_ok=True)


def _fsync(path: Path) -> None:
    """Flush a file's (or a folder's) data to the disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
