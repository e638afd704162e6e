"""Chapters 5-8 reuse a `colorlab train --run-root ROOT` run when given `-p run_root ROOT`."""

from __future__ import annotations

import json

from colorlab.cli import main
from colorlab.data import load_split
from colorlab.recipes import train_recipe
from colorlab.runs import run_dir

SETTINGS = dict(n_images=8, seed=0, size=32)


def test_a_chapter_resumes_the_run_colorlab_train_wrote_under_run_root(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setattr("colorlab.cache.CACHE_DIR", tmp_path / "cache")
    root = tmp_path / "runs"
    argv = ["train", "--recipe", "baseline", "--offline", "--data", str(photo_folder), "--n-images", "8",
            "--size", "32", "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--run-root", str(root)]
    assert main(argv) == 0

    # Chapter 5's training cell, with its parameters (data = the folder, run_root = ROOT):
    run = run_dir("baseline", root, data=str(photo_folder), **SETTINGS)
    assert (run / "gan.pt").is_file(), f"colorlab train wrote {sorted(p.name for p in root.iterdir())}"
    train_files, _ = load_split(str(photo_folder), SETTINGS["n_images"], seed=0)
    history = train_recipe("baseline", train_files, run, size=32, batch_size=4, seed=0, epochs={"gan": 1},
                           device="cpu", progress=False).histories["gan"]
    trained_by_cli = json.loads((run / "history.json").read_text())["gan"]
    assert history.epochs == trained_by_cli  # the CLI's epoch came back; nothing was trained again


def test_out_and_run_root_together_are_one_clear_error(tmp_path, capsys):
    argv = ["train", "--offline", "--out", str(tmp_path / "a"), "--run-root", str(tmp_path / "b")]
    assert main(argv) == 2
    assert capsys.readouterr().err.splitlines() == ["colorlab train: error: give --out or --run-root, not both"]


def test_mount_drive_does_nothing_outside_colab_and_a_refusal_is_one_line(monkeypatch, capsys):
    import sys
    import types

    from colorlab import runs

    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    assert runs.mount_drive() is None and capsys.readouterr().out == ""

    mounted = []

    def refuse(path):
        raise RuntimeError("permission denied by the reader")

    colab = types.ModuleType("google.colab")
    colab.drive = types.SimpleNamespace(mount=refuse)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    assert runs.mount_drive() is None
    assert capsys.readouterr().out == ("Google Drive not mounted (RuntimeError: permission denied by the reader); "
                                       "this session's runs stay in the session\n")

    colab.drive = types.SimpleNamespace(mount=mounted.append)
    assert runs.mount_drive() == runs.COLAB_DRIVE and mounted == ["/content/drive"]
