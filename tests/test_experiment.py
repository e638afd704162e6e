"""The three-model experiment end to end at toy size (the real run needs a GPU: configs/reference.yaml)."""

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from colorlab import hub
from colorlab.checkpoint import load_generator
from colorlab.cli import main
from colorlab.catalogue import MODELS
from colorlab.experiment import NO_LOSSES, ExperimentConfig
from colorlab.models import build_generator

ROOT = Path(__file__).resolve().parents[1]


def test_seed_config_parses_and_unknown_keys_are_refused(tmp_path):
    config = ExperimentConfig.from_yaml(ROOT / "configs" / "reference.yaml")
    assert (config.size, config.batch_size, config.pretrain_epochs, config.gan_epochs) == (256, 16, 20, 20)
    (tmp_path / "bad.yaml").write_text("size: 64\nlearning_rate: 3\n")
    with pytest.raises(ValueError, match="unknown settings learning_rate"):
        ExperimentConfig.from_yaml(tmp_path / "bad.yaml")


@pytest.mark.slow
def test_experiment_trains_three_models_and_writes_small_artifacts(tmp_path, capsys, models_isolated, monkeypatch):
    out, published = tmp_path / "results", tmp_path / "published"
    assert main(["experiment", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(out),
                 "--device", "cpu", "--export-models", str(published)]) == 0
    summary = json.loads((out / "metrics.json").read_text())
    assert list(summary["metrics"]) == [*MODELS, "grey"]
    for metrics in summary["metrics"].values():
        assert {"psnr", "ssim", "colourfulness", "colourfulness_true", "dCF"} <= set(metrics)
    grey = summary["metrics"]["grey"]  # the yardstick: the grey input itself, ab = 0 everywhere
    assert grey["colourfulness"] < 0.05 and grey["high_chroma"] == 0  # Lab -> sRGB rounding leaves a trace
    assert grey["colourfulness_true"] == pytest.approx(summary["metrics"]["baseline"]["colourfulness_true"], rel=1e-6)
    assert summary["command"].startswith("colorlab experiment --config")
    assert set(summary["seconds"]) == {"baseline", "L1 pretraining", "GAN fine-tuning"}
    assert summary["pretrained_backbone"] is False  # weights: null in the smoke config
    for name in ("grid.png", "losses.png", "metrics.json"):
        assert (out / name).stat().st_size < 1_000_000
    # the L1-only model is a snapshot taken before the GAN stage: it differs from the +GAN model
    assert summary["metrics"]["L1-pretrained"] != summary["metrics"]["pretrained+GAN"]
    assert "pretrained+GAN" in capsys.readouterr().out

    # --export-models: publishable generator-only files, their sha256 and manifest entries with the history
    manifest = json.loads((published / "MANIFEST.json").read_text())["models"]
    assert [entry["name"] for entry in manifest] == ["baseline-32", "resnet18-l1-32", "resnet18-gan-32"]
    for entry, model in zip(manifest, MODELS):
        file = published / entry["file"]
        assert entry["sha256"] == hashlib.sha256(file.read_bytes()).hexdigest()
        assert entry["bytes"] == file.stat().st_size
        state = torch.load(file, weights_only=True)
        assert set(state) == {"format", "spec", "stage", "epoch", "generator"}  # no optimizer, no discriminator
        assert load_generator(file)[1] == entry["spec"]
        assert entry["validation"]["metrics"] == summary["metrics"][model]
        assert entry["command"].endswith(f"--export-models {published}")
    assert manifest[2]["epochs"] == {"L1": 1, "cGAN + L1": 1}
    assert list(manifest[2]["history"]) == ["L1 pretraining", "GAN fine-tuning"]
    assert manifest[2]["history"]["GAN fine-tuning"] == summary["history"]["GAN fine-tuning"]

    # --from-published: the exported files, published under their names, give the same metrics again
    for entry in manifest:
        monkeypatch.setitem(hub.MODELS, entry["name"], hub.PublishedModel(
            **{key: entry[key] for key in ("name", "file", "sha256", "bytes", "spec")}, url="http://127.0.0.1:9/x",
            info=entry))
    monkeypatch.setenv("COLORLAB_MODELS", str(published))
    evaluated = tmp_path / "evaluated"
    assert main(["experiment", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(evaluated),
                 "--device", "cpu", "--from-published"]) == 0
    again = json.loads((evaluated / "metrics.json").read_text())
    assert again["command"].endswith("--from-published")
    assert again["missing"] == {"losses.png": NO_LOSSES} and not (evaluated / "losses.png").exists()
    assert (evaluated / "grid.png").is_file()
    for model in MODELS:  # float16 weights: equal to about 3 digits (0.05 on the 0-100 colourfulness scale)
        for key, value in summary["metrics"][model].items():
            assert again["metrics"][model][key] == pytest.approx(value, rel=2e-3, abs=0.05), (model, key)


def test_cpu64_config_is_the_exact_configuration_of_the_published_models():
    config = asdict(ExperimentConfig.from_yaml(ROOT / "configs" / "cpu64.yaml"))
    output = config.pop("output")  # a setting added after they were trained: their output layer, pinned
    for name in ("baseline-64", "resnet18-l1-64", "resnet18-gan-64"):
        assert hub.get(name).info["config"] == config, name
    for name in ("resnet18-l1-64", "resnet18-gan-64"):  # a retrained model has the published ones' architecture
        assert build_generator("resnet18", 64, weights=None, output=output).spec == hub.get(name).spec, name
