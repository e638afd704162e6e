"""The data-efficiency study (colorlab.study): nested subsets, equal steps, one record, resumable."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from colorlab import study
from colorlab.cli import main
from conftest import smooth_color_image


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    train, val = tmp_path / "train", tmp_path / "val"
    for folder, count in ((train, 40), (val, 6)):
        folder.mkdir()
        for i in range(count):
            smooth_color_image(rng, side=40).save(folder / f"p{i:03d}.png")
    return train, val


def test_subsets_are_nested_seeded_and_independent_of_the_listing_order():
    files = [Path(f"p{i:03d}.jpg") for i in range(100)]
    subsets = study.nested_subsets(files, (10, 20, 40), seed=0)
    assert subsets[10] == subsets[20][:10] and subsets[20] == subsets[40][:20]
    assert len(set(subsets[40])) == 40
    assert study.nested_subsets(list(reversed(files)), (10, 20, 40), seed=0) == subsets  # glob order does not matter
    assert study.nested_subsets(files, (10,), seed=1)[10] != subsets[10]
    with pytest.raises(ValueError, match="101 photos asked for, 100"):
        study.nested_subsets(files, (101,), seed=0)


def test_every_size_gets_the_same_number_of_steps_or_the_config_is_refused():
    config = study.StudyConfig(sizes=(80, 160, 320, 640, 1280), steps=240)
    assert [config.epochs(n) * (n // config.batch_size) for n in config.sizes] == [240] * 5
    with pytest.raises(ValueError, match="whole epochs"):
        study.StudyConfig(sizes=(80, 100), steps=240)  # 100 photos: 6 steps of 16, and 4 photos left over
    with pytest.raises(ValueError, match="whole epochs"):
        study.StudyConfig(sizes=(80, 1280), steps=100)  # 80 steps per epoch of 1280 photos do not divide 100
    runs = study.StudyConfig(sizes=(16, 32), steps=4, extra_seeds=(1,), extra_seed_sizes=(16,)).runs()
    assert sorted((n, s) for _, n, s in runs) == sorted([(16, 0), (16, 1), (32, 0)] * 2)


def test_a_study_trains_each_run_for_its_steps_measures_it_beside_grey_and_resumes(folders, tmp_path, capsys):
    train, val = folders
    config = study.StudyConfig(sizes=(16, 32), steps=4, extra_seed_sizes=(16,), size=32, batch_size=8,
                               device="cpu", out=str(tmp_path / "study"))
    record = study.run_study(config, train, val, progress=False)
    assert len(record["runs"]) == len(config.runs()) == 6
    for run in record["runs"].values():
        assert run["epochs"] * (run["photos"] // 8) == 4  # the same 4 steps for 16 and 32 photos
        assert set(run["metrics"]) == set(study.METRICS) and np.isfinite(list(run["metrics"].values())).all()
    run = record["runs"]["resnet18-32-seed0"]
    assert run["train_seconds"] > 0 and run["photos"] == 32
    assert json.loads((Path(config.out) / "metrics.json").read_text()) == record  # the file is the record
    grey, truth = record["yardsticks"]["grey"]["colourfulness"], record["yardsticks"]["truth"]["colourfulness"]
    assert grey < 0.01 * truth and record["n_val"] == 6  # grey has no colour (but 8-bit rounding's)
    assert record["provenance"]["command"] and record["weights_used"] is None
    checkpoint = Path(config.out) / "resnet18-32-seed0" / "pretrain.pt"
    assert checkpoint.is_file()
    # a second call trains nothing: every run is in the record
    stamp = checkpoint.stat().st_mtime_ns
    again = study.run_study(config, train, val, progress=False)
    assert again["runs"] == record["runs"] and checkpoint.stat().st_mtime_ns == stamp
    assert "| grey (ab = 0) |" in study.table(again) and "| ResNet18-UNet (L1) | 16 | 2 |" in study.table(again)
    assert study.frame(again).loc["grey (ab = 0)", "photos"] == "-"  # the notebook's table: text cells, grey first
    study.study_figure(again)
    # another study into the same folder is refused
    with pytest.raises(ValueError, match="other settings"):
        study.run_study(study.StudyConfig(sizes=(16,), steps=2, size=32, batch_size=8, device="cpu",
                                          extra_seed_sizes=(), out=config.out), train, val, progress=False)


def test_offline_the_imagenet_study_says_so_in_one_line_and_runs_random_init(monkeypatch, capsys):
    from colorlab.models import resnet_unet

    def offline(weights):
        raise resnet_unet.WeightsUnavailableError("could not download (offline)")

    monkeypatch.setattr(study, "_resnet18", offline)
    assert study.encoder_weights("imagenet") is None
    line = capsys.readouterr().out.strip()
    assert "\n" not in line and "offline" in line and "random init" in line
    assert study.encoder_weights(None) is None


def test_the_command_line_refuses_a_config_with_unknown_settings(tmp_path, capsys):
    config = tmp_path / "study.yaml"
    config.write_text("sizes: [16]\nsteps: 2\nepoch: 3\n")
    assert main(["study", str(config)]) == 2
    assert "unknown study settings epoch" in capsys.readouterr().err
