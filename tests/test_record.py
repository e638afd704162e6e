"""The one record format: provenance, and training seconds summed from the histories (resumed runs included)."""

from __future__ import annotations

import json
from pathlib import Path
from dataclasses import replace

import numpy as np
import pytest

from colorlab import recipes, record
from colorlab.recipes import RunConfig
from colorlab.train import History
from tests.conftest import smooth_color_image


def test_training_seconds_are_the_sum_of_every_epochs_seconds():
    histories = {"L1 pretraining": History({"loss_G": [1.0, 0.5], "seconds": [10.0, 12.25]}),
                 "GAN fine-tuning": History({"loss_G": [2.0], "seconds": [30.0]})}
    assert record.training_seconds(histories) == {"L1 pretraining": 22.2, "GAN fine-tuning": 30.0}


def test_provenance_names_command_commit_device_versions_and_dates():
    head = record.provenance("colorlab train --recipe baseline", "cpu", started="2026-12-07T10:00:00Z")
    assert head["command"] == "colorlab train --recipe baseline"
    assert head["device"].startswith("cpu (") and head["device"].endswith(" cores)")
    assert set(head["versions"]) == {"colorlab", "torch", "python"}
    assert head["started"] == "2026-12-07T10:00:00Z" and head["finished"] >= head["started"]
    assert head["commit"]  # a hash in a checkout, "unknown" elsewhere


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(5):
        smooth_color_image(rng, 32).save(folder / f"p{i}.png")
    return folder


def test_a_resumed_runs_record_counts_the_epochs_of_the_first_call_too(photos, tmp_path):
    """Epoch 1 trained in one call, epoch 2 in a resumed one: the record's seconds cover both epochs."""
    config = RunConfig(recipe="baseline", data=str(photos), n_images=5, size=32, batch_size=2, epochs=1,
                       weights=None, device="cpu", out=str(tmp_path / "run"), num_workers=0, progress=False,
                       cache=False)
    recipes.run(config)
    summary = recipes.run(replace(config, epochs=2, resume=True), command="colorlab train --epochs 2 --resume")
    history = json.loads((tmp_path / "run" / "history.json").read_text())["gan"]
    assert len(history["seconds"]) == 2
    assert summary["seconds"] == {"gan": round(sum(history["seconds"]), 1)}
    written = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert written["command"] == "colorlab train --epochs 2 --resume" and written["seconds"] == summary["seconds"]
    assert {"commit", "device", "versions", "started", "finished", "config", "metrics"} <= set(written)


def test_every_checkpoint_holds_the_run_specification_and_another_one_is_refused(photos, tmp_path):
    """recipes.run stores RunConfig.spec() in each checkpoint; resuming it with another batch size is refused."""
    from colorlab.checkpoint import load_checkpoint

    config = RunConfig(recipe="baseline", data=str(photos), n_images=5, size=32, batch_size=2, epochs=1,
                       weights=None, device="cpu", out=str(tmp_path / "run"), num_workers=0, progress=False,
                       cache=False)
    recipes.run(config)
    assert load_checkpoint(tmp_path / "run" / "gan.pt")["run"] == config.spec().as_dict()
    assert config.spec().max_side == 4 * 32 and config.spec().data == str(photos.resolve())
    with pytest.raises(ValueError, match=r"belongs to another run \(batch_size 2 there, 4 now\)"):
        recipes.run(replace(config, batch_size=4, epochs=2, resume=True))
    recipes.run(replace(config, epochs=2, resume=True))  # more epochs: the same specification


def test_committed_results_are_found_beside_the_book_never_beside_the_package(tmp_path, monkeypatch):
    """A recorded run is read from the repository the reader works in (the chapters' folder, or the build's staged
    copy of it), not from wherever the package is installed: a pip install elsewhere has no results and says so."""
    import re

    from colorlab import book, comparison, hints, study

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(root / "book")  # as a chapter runs
    assert book.recorded_results("hints64") == root / "results" / "hints64"
    assert hints.recorded_run()["counts"] and comparison.committed_results()["metrics"]
    monkeypatch.chdir(tmp_path)  # a reader's own folder, no repository around it
    assert book.recorded_results("hints64") is None
    assert hints.recorded_run() is None and comparison.committed_results() is None and study.recorded_study() is None
    package = root / "colorlab"
    reaching = [path.name for path in package.rglob("*.py")
                if re.search(r"__file__\)?\.resolve\(\)\.parents\[1\] / \"results\"", path.read_text())]
    assert not reaching, f"modules reading results/ through the package's location: {reaching}"
