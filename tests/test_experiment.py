"""The three-model experiment end to end at toy size (the real run needs a GPU: configs/seed.yaml)."""

import json
from pathlib import Path

import pytest

from colorlab.cli import main
from colorlab.experiment import MODELS, ExperimentConfig

ROOT = Path(__file__).resolve().parents[1]


def test_seed_config_parses_and_unknown_keys_are_refused(tmp_path):
    config = ExperimentConfig.from_yaml(ROOT / "configs" / "seed.yaml")
    assert (config.size, config.batch_size, config.pretrain_epochs, config.gan_epochs) == (256, 16, 20, 20)
    (tmp_path / "bad.yaml").write_text("size: 64\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match="unknown settings learning_rate"):
        ExperimentConfig.from_yaml(tmp_path / "bad.yaml")


@pytest.mark.slow
def test_experiment_trains_three_models_and_writes_small_artifacts(tmp_path, capsys):
    out = tmp_path / "results"
    assert main(["experiment", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out),
                 "--device", "cpu"]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert list(summary["metrics"]) == list(MODELS)
    for metrics in summary["metrics"].values():
        assert {"psnr", "ssim", "colourfulness", "colourfulness_true", "dCF"} <= set(metrics)
    assert summary["command"].startswith("colorlab experiment --config")
    assert set(summary["seconds"]) == {"baseline (cGAN + L1)", "resnet18 L1 pretraining", "resnet18 GAN fine-tuning"}
    assert summary["pretrained_backbone"] is False  # weights: null in the smoke config
    for name in ("grid.png", "losses.png", "metrics.json"):
        assert (out / name).stat().st_size < 1_000_000
    # the L1-only model is a snapshot taken before the GAN stage: it differs from the +GAN model
    assert summary["metrics"]["L1-pretrained"] != summary["metrics"]["pretrained+GAN"]
    assert "pretrained+GAN" in capsys.readouterr().out
