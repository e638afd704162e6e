"""train_recipe, the one function that trains a recipe; the experiment's config; the chapters' published_or_train."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from colorlab import book
from colorlab.checkpoint import load_checkpoint, save_checkpoint
from colorlab.experiment import ExperimentConfig
from colorlab.models import build_generator
from colorlab.recipes import RECIPES, RunConfig, train_recipe
from colorlab.stages import stage_config
from colorlab.train import History
from tests.conftest import smooth_color_image


@pytest.fixture(scope="module")
def four_photos(tmp_path_factory) -> list[Path]:
    folder = tmp_path_factory.mktemp("four")
    rng = np.random.default_rng(1)
    for i in range(4):
        smooth_color_image(rng, 32).save(folder / f"p{i}.png")
    return sorted(folder.glob("*.png"))


@pytest.mark.parametrize("recipe, expected", [
    ("baseline", [("gan", 3)]),
    ("resnet18", [("pretrain", 2), ("gan", 3)]),
])
def test_a_recipe_trains_its_stages_in_order_the_last_for_epochs_the_others_for_pretrain_epochs(
        four_photos, tmp_path, monkeypatch, recipe, expected):
    """What trains is read from the recipe's entry: breaking its stage order or the epochs rule fails here."""
    trained = []

    def record_fit(stage, loader, **kwargs):
        trained.append((stage.name, stage.config.epochs))
        return History()

    monkeypatch.setattr("colorlab.recipes.fit", record_fit)
    config = RunConfig(recipe=recipe, epochs=3, pretrain_epochs=2, weights=None)
    train_recipe(recipe, four_photos, tmp_path, size=32, epochs=config.stage_epochs, weights=None, device="cpu",
                 progress=False, cache=False, num_workers=0)
    assert trained == expected
    assert list(RECIPES[recipe].stages) == [stage for stage, _ in expected]


def _train(photos, out, **kwargs):
    settings = dict(size=32, batch_size=2, seed=3, weights=None, device="cpu", progress=False, cache=False,
                    num_workers=0)
    return train_recipe("resnet18", photos, out, **settings | kwargs)


def test_a_recipe_trained_stage_by_stage_equals_the_recipe_trained_at_once(four_photos, tmp_path):
    """Chapter 6 trains 'pretrain', chapter 7 'gan' from its generator: the same as `colorlab train` in one go."""
    epochs = {"pretrain": 1, "gan": 1}
    whole = _train(four_photos, tmp_path / "whole", epochs=epochs)
    assert set(whole.checkpoints) == {"pretrain", "gan"} and whole.checkpoints["gan"] == tmp_path / "whole" / "gan.pt"
    first = _train(four_photos, tmp_path / "parts", epochs=epochs, stages=("pretrain",))
    assert not (tmp_path / "parts" / "gan.pt").exists()
    second = _train(four_photos, tmp_path / "parts", epochs=epochs, stages=("gan",), generator=first.generator)
    assert list(second.histories) == ["gan"]
    for stage in ("pretrain", "gan"):
        reference, parts = (load_checkpoint(folder / f"{stage}.pt") for folder in (tmp_path / "whole", tmp_path / "parts"))
        assert reference["stage"] == parts["stage"] == stage
        for name in ("generator",) + (("discriminator",) if stage == "gan" else ()):
            for key, value in reference[name].items():
                assert torch.equal(value, parts[name][key]), f"{stage}.pt {name} {key}"


def test_prefix_names_the_checkpoints_as_the_experiment_does(four_photos, tmp_path):
    trained = _train(four_photos, tmp_path, epochs={"pretrain": 1}, stages=("pretrain",), prefix="resnet18_")
    assert trained.checkpoints["pretrain"] == tmp_path / "resnet18_pretrain.pt"
    assert load_checkpoint(tmp_path / "resnet18_pretrain.pt")["stage"] == "pretrain"


def test_every_stages_checkpoint_is_checked_before_the_first_stage_trains(four_photos, tmp_path):
    torch.manual_seed(3)
    spec = build_generator("resnet18", 32, weights=None).spec
    save_checkpoint(tmp_path / "gan.pt", {"spec": spec, "stage": "pretrain", "config": vars(stage_config("pretrain", 1)),
                                          "generator": {}})
    with pytest.raises(ValueError, match="gan.pt is a 'pretrain' checkpoint, this is the 'gan' stage"):
        _train(four_photos, tmp_path, epochs={"pretrain": 1, "gan": 1})
    assert not (tmp_path / "pretrain.pt").exists()  # refused before an hour of pretraining


@pytest.mark.parametrize("kwargs, message", [
    (dict(recipe="vgg"), "unknown recipe 'vgg'; choose one of baseline, resnet18, classification"),
    (dict(stages=("classify",)), "the resnet18 recipe has no stage classify; its stages: pretrain, gan"),
    (dict(epochs={"pretrain": 1}), "no epochs given for stage gan"),
])
def test_bad_recipes_stages_and_epochs_are_one_line_errors(four_photos, tmp_path, kwargs, message):
    recipe = kwargs.pop("recipe", "resnet18")
    with pytest.raises(ValueError, match=message):
        train_recipe(recipe, four_photos, tmp_path, size=32, **{"epochs": {"pretrain": 1, "gan": 1}} | kwargs)


@pytest.mark.parametrize("line, message", [
    ("size: 100", "size must be a power of two"),
    ("gan_epochs: 0", "gan_epochs must be >= 1"),
    ("baseline_epochs: 2.5", "baseline_epochs must be int"),
    ("output: sigmoid", "output must be null or one of linear, tanh"),
    ("n_images: 1", "n_images must be an integer >= 2"),
    ("batch_size: '16'", "batch_size must be int"),
    ("cache: yes please", "cache must be bool"),
])
def test_the_experiment_config_is_validated_in_one_line_naming_the_file(tmp_path, line, message):
    size = "" if line.startswith("size:") else "size: 64\n"  # a second size would be a duplicate key, refused
    (tmp_path / "bad.yaml").write_text(f"{size}{line}\n")
    with pytest.raises(ValueError, match=f"bad.yaml: {message}"):
        ExperimentConfig.from_yaml(tmp_path / "bad.yaml")


class _Stop(Exception):
    pass


def test_the_experiments_settings_reach_the_recipes_it_trains(four_photos, tmp_path, monkeypatch):
    """The published models' settings (linear output, 12 L1 epochs) are what the experiment trains with."""
    from colorlab import experiment

    calls = {}

    def capture(recipe, files, out, **kwargs):
        calls[recipe] = kwargs
        if recipe == "resnet18":
            raise _Stop  # both recipes seen: nothing else to check
        return None

    monkeypatch.setattr(experiment, "train_recipe", capture)
    monkeypatch.setattr(experiment, "load_split", lambda *args, **kwargs: (four_photos, four_photos))
    config = ExperimentConfig(size=32, weights=None, output="linear", baseline_epochs=2, pretrain_epochs=12,
                              gan_epochs=3, batch_size=4, seed=7)
    with pytest.raises(_Stop):
        experiment.run_experiment(config, tmp_path, device="cpu", progress=False)
    assert calls["baseline"]["epochs"] == {"gan": 2}
    assert calls["resnet18"]["epochs"] == {"pretrain": 12, "gan": 3}
    assert (calls["resnet18"]["output"], calls["resnet18"]["weights"]) == ("linear", None)
    for kwargs in calls.values():
        assert (kwargs["size"], kwargs["batch_size"], kwargs["seed"], kwargs["resume"]) == (32, 4, 7, True)


def test_published_or_train_uses_the_published_model_and_trains_nothing(register_published, tiny_checkpoint,
                                                                        tmp_path, monkeypatch, capsys):
    register_published("http://127.0.0.1:9/x", name="baseline-32")
    shutil.copy(tiny_checkpoint, tmp_path / "baseline-32.pt")
    monkeypatch.setenv("COLORLAB_MODELS", str(tmp_path))

    def train():
        raise AssertionError("trained although the published model is here")

    model = book.published_or_train("baseline", "auto", 32, train)
    assert model.spec["size"] == 32
    assert capsys.readouterr().out.startswith("baseline: the published model baseline-32")

    trained = torch.nn.Identity()
    assert book.published_or_train("baseline", "none", 32, lambda: trained) is trained  # published="none": own run
    assert capsys.readouterr().out == "baseline: this chapter's own run (published='none')\n"
