"""The stages: one source of their settings, and stage objects that own networks, optimizers and objective."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from colorlab.checkpoint import CheckpointError, save_checkpoint
from colorlab.classify import build_classifier, gamut_bins
from colorlab.data import to_model_batch
from colorlab.models import build_discriminator, build_generator
from colorlab.recipes import RunConfig
from colorlab.stages import GANStage, L1Stage, TrainConfig, build_stage, stage_config
from colorlab.train import resumable_state


def test_each_stage_has_the_reference_tutorials_settings():
    pretrain, gan, classify = (stage_config(stage, 3, seed=4) for stage in ("pretrain", "gan", "classify"))
    assert (pretrain.lr_g, pretrain.betas, pretrain.epochs, pretrain.seed) == (1e-4, (0.9, 0.999), 3, 4)
    assert (gan.lr_g, gan.lr_d, gan.betas, gan.lambda_l1, gan.gan_mode) == (2e-4, 2e-4, (0.5, 0.999), 100.0, "vanilla")
    assert (classify.lr_g, classify.betas) == (1e-4, (0.9, 0.999))  # Adam as in L1 pretraining
    assert stage_config("gan", 2, lambda_l1=10).lambda_l1 == 10
    with pytest.raises(ValueError, match="unknown stage 'finetune'; choose one of pretrain, gan, classify"):
        stage_config("finetune", 1)


def test_run_config_and_the_cli_read_the_gan_stage_defaults(monkeypatch):
    assert (RunConfig().gan_mode, RunConfig().lambda_l1) == ("vanilla", 100.0)
    from colorlab.cli import build_parser

    # the CLI reads RunConfig's defaults when it builds its parser: a retyped default would not follow
    for name, value in {"size": 128, "batch_size": 7, "epochs": 3, "pretrain_epochs": 2, "lambda_l1": 50.0,
                        "gan_mode": "lsgan", "seed": 9, "recipe": "baseline"}.items():
        monkeypatch.setattr(RunConfig, name, value)
        assert getattr(build_parser().parse_args(["train"]), name) == value, name


def _batch(size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    return to_model_batch(torch.randint(0, 256, (2, 3, size, size), dtype=torch.uint8))


class Counting(nn.Module):
    """A wrapper that counts the forward passes it forwards (what torch.compile or DDP would be)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net, self.calls = net, 0

    def forward(self, x):
        self.calls += 1
        return self.net(x)


def test_wrap_runs_the_step_through_the_wrappers_and_saves_the_originals():
    torch.manual_seed(0)
    stage = GANStage(build_generator("baseline", 32), TrainConfig(epochs=1), build_discriminator())
    stage.to(torch.device("cpu"))
    plain_keys = {name: list(state) for name, state in stage.state_dict().items()}
    wrappers = {}

    def wrap(net: nn.Module) -> nn.Module:
        wrappers[net] = Counting(net)
        return wrappers[net]

    stage.wrap(wrap)
    before = [p.detach().clone() for p in stage.generator.parameters()]
    stage.step(*_batch())
    assert wrappers[stage.generator].calls == 1  # G runs once per step
    assert wrappers[stage.discriminator].calls == 3  # D: real, fake (detached), fake again for G
    assert any(not torch.equal(a, b) for a, b in zip(before, stage.generator.parameters()))  # shared parameters
    assert {name: list(state) for name, state in stage.state_dict().items()} == plain_keys  # no "net." prefixes


def test_a_stage_state_dict_restores_networks_and_optimizers():
    torch.manual_seed(0)
    first = GANStage(build_generator("baseline", 32), TrainConfig(epochs=1), build_discriminator())
    first.to(torch.device("cpu"))
    first.step(*_batch())
    second = GANStage(build_generator("baseline", 32), TrainConfig(epochs=1), build_discriminator())
    second.to(torch.device("cpu"))
    second.load_state_dict(copy.deepcopy(first.state_dict()))  # as from a file: Adam would share tensors
    batch = _batch()
    torch.manual_seed(1)
    losses_first = first.step(*batch)
    torch.manual_seed(1)
    losses_second = second.step(*batch)  # the same Adam moments: the same next step
    assert set(first.state_dict()) == {"generator", "discriminator", "opt_g", "opt_d"}
    for key in losses_first:
        assert torch.equal(losses_first[key], losses_second[key]), key
    for a, b in zip(first.generator.state_dict().values(), second.generator.state_dict().values()):
        assert torch.equal(a, b)


def test_the_l1_stage_trains_the_generator_alone():
    torch.manual_seed(0)
    stage = build_stage("pretrain", build_generator("baseline", 32), stage_config("pretrain", 1))
    assert isinstance(stage, L1Stage) and set(stage.networks) == {"generator"}
    stage.to(torch.device("cpu"))
    assert set(stage.step(*_batch())) == {"loss_G", "loss_G_L1"}
    assert set(stage.state_dict()) == {"generator", "opt_g"}


def test_a_checkpoint_of_another_stage_is_refused_and_a_regression_one_does_not_fit_a_classifier(tmp_path):
    """A classifier's checkpoint tagged with another stage's name is refused in one line, naming both stages."""
    config = stage_config("classify", 2)
    classifier = build_classifier("baseline", 32, bins=gamut_bins())
    other = save_checkpoint(tmp_path / "classify.pt", {"spec": classifier.spec, "stage": "pretrain",
                                                       "config": vars(config), "generator": {}})
    with pytest.raises(ValueError, match="is a 'pretrain' checkpoint, this is the 'classify' stage"):
        resumable_state(other, classifier.spec, "classify", config)
    own = save_checkpoint(tmp_path / "own.pt", {"spec": classifier.spec, "stage": "classify",
                                                "config": vars(config), "generator": {}})
    assert resumable_state(own, classifier.spec, "classify", config)["stage"] == "classify"
    regression = build_generator("baseline", 32)
    l1 = save_checkpoint(tmp_path / "pretrain.pt", {"spec": regression.spec, "stage": "pretrain",
                                                    "config": vars(config), "generator": {}})
    with pytest.raises(CheckpointError, match="head"):
        resumable_state(l1, classifier.spec, "classify", config)


def test_every_stage_has_its_settings_and_its_builder_and_an_unknown_one_is_refused():
    from colorlab.models import build_generator
    from colorlab.stages import STAGE_BUILDERS, STAGE_DEFAULTS, build_stage, stage_config

    assert set(STAGE_BUILDERS) == set(STAGE_DEFAULTS)
    generator = build_generator("baseline", 32)
    assert type(build_stage("gan", generator, stage_config("gan", 1, 0))).__name__ == "GANStage"
    with pytest.raises(ValueError, match="unknown stage 'gann'"):
        build_stage("gann", generator, stage_config("gan", 1, 0))
    with pytest.raises(ValueError, match="needs an objective"):
        build_stage("classify", generator, stage_config("classify", 1, 0))
