"""Chapters 5-8 reuse a `colorlab train --run-root ROOT` run when given `-p run_root ROOT`."""

from __future__ import annotations

import json

from colorlab import book
from colorlab.cli import main
from colorlab.data import load_split
from colorlab.stages import GANStage

SETTINGS = dict(n_images=8, seed=0, size=32)


def test_a_chapter_resumes_the_run_colorlab_train_wrote_under_run_root(photo_folder, tmp_path, monkeypatch):
    monkeypatch.setattr("colorlab.cache.IMAGE_CACHE", tmp_path / "cache" / "images")
    root = tmp_path / "runs"
    argv = ["train", "--recipe", "baseline", "--offline", "--data", str(photo_folder), "--n-images", "8",
            "--size", "32", "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--run-root", str(root)]
    assert main(argv) == 0

    # Chapter 5's training cell, with its parameters (data = the folder, run_root = ROOT), must train nothing:
    def no_training(*args, **kwargs):
        raise AssertionError("the chapter trained again instead of resuming the CLI's run")

    monkeypatch.setattr(GANStage, "step", no_training)
    train_files, _ = load_split(str(photo_folder), SETTINGS["n_images"], seed=SETTINGS["seed"])
    trained = book.train_chapter("baseline", train_files, epochs={"gan": 1}, size=SETTINGS["size"], batch_size=4,
                                 seed=SETTINGS["seed"], data=str(photo_folder), n_images=SETTINGS["n_images"],
                                 run_root=str(root), device="cpu", pretrained="none", smoke=True)
    (folder,) = root.iterdir()  # the one folder both named
    assert trained.checkpoints["gan"] == folder / "gan.pt"
    assert trained.histories["gan"].epochs == json.loads((folder / "history.json").read_text())["gan"]


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
