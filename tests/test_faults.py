"""Faults that used to slip through (issue 12): each test here fails without its fix.

The fault corpus (tools/fault_corpus.py) is generated at test time and run through the real
`colorlab colorize` command; disk-full is tested for real on a tiny tmpfs where this process
may mount one (root on Linux), and by an error injected at the write everywhere else.
"""

from __future__ import annotations

import contextlib
import errno
import importlib.util
import io
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab import checkpoint as checkpoint_module
from colorlab.atomic import WriteError, atomic_write, temp_path
from colorlab.checkpoint import CheckpointError, load_checkpoint, load_generator, save_checkpoint
from colorlab.cli import main
from colorlab.colorize import DownscaledWarning, load_for_colorize
from colorlab.models import build_generator
from tests.conftest import smooth_color_image

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("fault_corpus", ROOT / "tools" / "fault_corpus.py")
fault_corpus = sys.modules["fault_corpus"] = importlib.util.module_from_spec(_spec)  # dataclasses look it up
_spec.loader.exec_module(fault_corpus)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return fault_corpus.make_checkpoint(tmp_path_factory.mktemp("checkpoint") / "gan.pt")


def lightness_mean(path: Path) -> float:
    with Image.open(path) as image:
        return float(np.asarray(image.convert("L"), dtype=np.float32).mean())


# --- the fault corpus ---------------------------------------------------------------------------------


def test_every_file_of_the_fault_corpus_gets_its_defined_outcome_and_the_good_ones_are_written(tmp_path, checkpoint):
    folder = tmp_path / "corpus"
    folder.mkdir()
    cases = fault_corpus.build_corpus(folder)
    outcomes, result = fault_corpus.run_corpus(folder, checkpoint, tmp_path / "out")  # times out if anything hangs
    assert "Traceback" not in result.stderr and "RuntimeWarning" not in result.stderr, result.stderr
    messages = [line for line in result.stderr.splitlines() if line and not re.match(r"colorize: +\d+%", line)]
    assert messages and all(line.startswith("colorlab colorize: ") for line in messages), result.stderr
    for case in cases:
        assert outcomes.get(case.name, "").startswith(case.expect), (case.name, outcomes.get(case.name))
    n_written = sum(case.expect.startswith("written") for case in cases)
    n_attempted = sum(not case.expect.startswith("skipped") for case in cases)  # a skipped input is no failure
    assert result.returncode == 1 and f"colorized {n_written} of {n_attempted} images" in result.stdout
    out = tmp_path / "out"
    assert lightness_mean(out / "float01_color.png") > 50  # the 0..1 float TIFF is not colorized black
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in out.glob("*_color.png"))  # no temp files


def test_the_docs_table_lists_the_corpus_the_script_builds(tmp_path):
    """docs/reliability.md's table is the script's output (rerun it after changing the corpus), not typed rows."""
    docs = (ROOT / "docs" / "reliability.md").read_text()
    table = docs[docs.index(fault_corpus.BEGIN):docs.index(fault_corpus.END)]
    names = [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")]
    assert names == [case.name for case in fault_corpus.build_corpus(tmp_path)]


def test_a_photo_over_the_pixel_limit_is_downscaled_with_one_warning(tmp_path):
    path = tmp_path / "big.jpg"
    smooth_color_image(np.random.default_rng(0), 200).save(path)
    with pytest.warns(DownscaledWarning, match=r"big.jpg: 200x200 is more than 10_000 pixels; colorized at 100x100"):
        image = load_for_colorize(path, max_pixels=10_000)
    assert image.size == (100, 100)  # decoded at 1/2 per side by the JPEG decoder, not after a full decode
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # under the limit: full resolution, nothing said
        assert load_for_colorize(path, max_pixels=40_000).size == (200, 200)


# --- disk full ----------------------------------------------------------------------------------------


@pytest.fixture
def full_disk(tmp_path):
    """A 2 MB tmpfs folder, unmounted afterwards; skipped (reason printed) where mounting is not allowed."""
    mountpoint = tmp_path / "small-fs"
    mountpoint.mkdir()
    if sys.platform != "linux" or os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a real full disk needs a tmpfs mount: Linux and root only (the injected-fault tests still run)")
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mountpoint)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({mounted.stderr.strip()}); the injected-fault tests still run")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", str(mountpoint)], check=True)


def _weights(n: int) -> dict:
    generator = build_generator("baseline", 32)
    return {"spec": generator.spec, "generator": {"w": torch.arange(n, dtype=torch.float32)}}


def _assert_failed_save_kept_the_previous(path: Path, previous: dict, err: pytest.ExceptionInfo) -> None:
    message = str(err.value)
    assert message.startswith(f"{path}: could not write the checkpoint (No space left on device)"), message
    assert "\n" not in message and "the previous one is kept" in message
    assert torch.equal(load_checkpoint(path)["generator"]["w"], previous["generator"]["w"])
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]  # no temp file left


def test_a_checkpoint_save_on_a_really_full_disk_keeps_the_previous_one(full_disk):
    path = full_disk / "gan.pt"
    small = _weights(1000)
    save_checkpoint(path, small)
    with pytest.raises(WriteError) as err:
        save_checkpoint(path, _weights(1_000_000))  # 4 MB of weights on a 2 MB file system
    _assert_failed_save_kept_the_previous(path, small, err)


class _DiskFullAfter:
    """A file object that raises ENOSPC once `limit` bytes are written, as a full disk does."""

    def __init__(self, path, mode, limit: int = 4096):
        self.file, self.limit, self.written = open(path, mode), limit, 0

    def write(self, data) -> int:
        self.written += len(data)
        if self.written > self.limit:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.file.write(data)

    def __getattr__(self, name):
        return getattr(self.file, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.file.close()


def test_a_checkpoint_save_that_hits_a_full_disk_keeps_the_previous_one(tmp_path, monkeypatch):
    path = tmp_path / "gan.pt"
    small = _weights(10)
    save_checkpoint(path, small)
    monkeypatch.setattr(checkpoint_module, "open", _DiskFullAfter, raising=False)
    with pytest.raises(WriteError) as err:
        save_checkpoint(path, _weights(100_000))
    _assert_failed_save_kept_the_previous(path, small, err)


def test_stale_temp_files_of_a_killed_save_are_removed_by_the_next_save(tmp_path):
    path = tmp_path / "gan.pt"
    finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = temp_path(path, int(finished.stdout))  # what a SIGKILL during torch.save leaves behind
    alive = temp_path(path, os.getppid())  # a save in progress in another, living process
    for tmp in (dead, alive):
        tmp.write_bytes(b"half a checkpoint")
    save_checkpoint(path, _weights(10))
    assert not dead.exists() and alive.exists()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="names open files through /proc (Linux)")
def test_a_write_is_fsynced_before_the_rename_and_the_folder_after_it(tmp_path, monkeypatch):
    """A power cut must not leave a renamed but empty file: data on disk first, then the name."""
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 real_fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (events.append(("replace", str(b))), real_replace(a, b))[1])
    target = tmp_path / "file.bin"
    with atomic_write(target) as tmp:
        tmp.write_bytes(b"data")
    assert events == [("fsync", str(temp_path(target))), ("replace", str(target)), ("fsync", str(tmp_path))]


def _noisy_photos(folder: Path, n: int) -> list[Path]:
    """n 300x300 photos of colour noise: PNGs of about 270 kB that no compressor can shrink."""
    inputs = [folder / f"p{i}.png" for i in range(n)]
    for i, path in enumerate(inputs):
        Image.fromarray(np.random.default_rng(i).integers(0, 256, (300, 300, 3), dtype=np.uint8)).save(path)
    return inputs


def _colorize_into(out: Path, checkpoint: Path, inputs: list[Path]) -> tuple[int, list[str], str]:
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        code = main(["colorize", *map(str, inputs), "-o", str(out), "--checkpoint", str(checkpoint), "--device", "cpu"])
    return code, [line for line in stderr.getvalue().splitlines() if "error" in line], stdout.getvalue()


def _assert_stopped_cleanly(code: int, errors: list[str], stdout: str, out: Path) -> None:
    assert code == 1
    [error] = errors
    assert error.startswith(f"colorlab colorize: error: {out}/p") and "(No space left on device)" in error, error
    assert "stopped with" in error and "stopped early" in stdout
    assert all(p.name.endswith("_color.png") for p in out.iterdir())  # no partial temp file
    for written in out.iterdir():
        with Image.open(written) as image:
            image.load()  # every file that is there is complete


def test_colorize_on_a_really_full_disk_names_the_file_and_stops(full_disk, checkpoint, tmp_path):
    (full_disk / "filler").write_bytes(b"\0" * (2 * 1024 * 1024 - 400_000))  # leaves room for one output PNG
    inputs = _noisy_photos(tmp_path, 3)
    _assert_stopped_cleanly(*_colorize_into(full_disk / "out", checkpoint, inputs), full_disk / "out")


def test_colorize_that_hits_a_full_disk_names_the_file_and_stops(checkpoint, tmp_path, monkeypatch):
    from colorlab import colorize

    real_write_png = colorize.write_png
    calls = {"n": 0}

    def write_png(pixels, file, *args, **kwargs):  # colorize's PNG writer, into the atomic temporary file
        calls["n"] += 1
        if calls["n"] == 2:  # the second output finds the disk full halfway through
            file.write(b"\x89PNG half")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write_png(pixels, file, *args, **kwargs)

    inputs = _noisy_photos(tmp_path, 3)
    monkeypatch.setattr(colorize, "write_png", write_png)
    code, errors, stdout = _colorize_into(tmp_path / "out", checkpoint, inputs)
    _assert_stopped_cleanly(code, errors, stdout, tmp_path / "out")
    assert "colorized 1 of 2 images" in stdout and "1 inputs not attempted" in errors[0]


# --- checkpoints that must be refused -----------------------------------------------------------------


def test_a_checkpoint_with_nan_weights_is_refused_when_loaded(tmp_path, capsys):
    generator = build_generator("baseline", 32)
    weights = generator.state_dict()
    weights["model.model.0.weight"] = torch.full_like(weights["model.model.0.weight"], float("nan"))
    save_checkpoint(tmp_path / "nan.pt", {"spec": generator.spec, "generator": weights})
    with pytest.raises(CheckpointError, match="NaN or infinite values .* model.model.0.weight"):
        load_generator(tmp_path / "nan.pt")
    photo = tmp_path / "p.png"
    smooth_color_image(np.random.default_rng(0), 40).save(photo)
    assert main(["colorize", str(photo), "-o", str(tmp_path / "out"), "--checkpoint", str(tmp_path / "nan.pt")]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("colorlab colorize: error: ") and "NaN" in line
    assert not (tmp_path / "out").exists()


class _Code:
    def __reduce__(self):
        return (print, ("this would run on load",))


@pytest.mark.parametrize("content", [
    lambda path: torch.save({"format": "colorlab-checkpoint-v1", "spec": {}, "payload": _Code()}, path),
    lambda path: path.write_bytes(pickle.dumps({"weights": [1, 2, 3]})),  # a plain pickle, not a torch file
    lambda path: (torch.save({"w": torch.zeros(1000)}, path), path.write_bytes(path.read_bytes()[:300])),
])
def test_a_foreign_or_corrupt_checkpoint_never_advises_loading_it_unsafely(tmp_path, content):
    path = tmp_path / "gan.pt"
    content(path)
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(path)
    message = str(err.value)
    assert message.startswith(f"{path}: not a") and "\n" not in message
    assert "weights_only" not in message and "False" not in message and "trust" not in message, message


def test_a_folder_given_as_checkpoint_is_called_a_folder(tmp_path):
    with pytest.raises(CheckpointError, match=r"is a folder; give the checkpoint file in it, e.g. .*gan.pt"):
        load_checkpoint(tmp_path)
