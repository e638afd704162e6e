"""The catalogue of trained models: each one named once, with every name its uses need.

The reference tutorial compares three models, made by two recipes (`colorlab.recipes`). A record
(metrics.json), a table, a figure, a published file and a checkpoint all name them; this module
is where those names live, so that no other module spells them:

- `StageEntry`: one stage of a recipe as records name it: its `label` keys the histories, the
  seconds and the loss panels; its `objective` is what a published model's "epochs" call it.
- `ModelEntry`: one trained model: the `key` of its metrics in a record, the `label` of its
  row or column in the book's tables and figures, the recipe and the stages it went through (so
  its checkpoint), the published name it is released under, and what it is, in words.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StageEntry:
    """A recipe's stage as the records name it."""

    recipe: str
    stage: str
    label: str  # key of its history and seconds in a record; title of its loss panel
    objective: str  # what it minimises, as a published model's "epochs" name it


@dataclass(frozen=True)
class ModelEntry:
    """One trained model of the three-model comparison."""

    key: str  # its metrics' key in metrics.json
    label: str  # its row or column in tables and figures
    recipe: str
    stages: tuple[str, ...]  # the recipe's stages it has been through, in order
    published: str  # its published name without "-SIZE"
    hub_stage: str  # the chapter stage whose published models stand for it (colorlab.hub.CHAPTER_STAGES)
    what: str

    @property
    def checkpoint(self) -> str:
        """Its checkpoint in an experiment's checkpoints folder: the recipe's prefix and its last stage."""
        return f"{self.recipe}_{self.stages[-1]}.pt"

    @property
    def trained_stages(self) -> tuple[StageEntry, ...]:
        return tuple(stage_entry(self.recipe, stage) for stage in self.stages)

    def published_name(self, size: int) -> str:
        return f"{self.published}-{size}"


STAGES: tuple[StageEntry, ...] = (
    StageEntry("baseline", "gan", "baseline", "cGAN + L1"),
    StageEntry("resnet18", "pretrain", "L1 pretraining", "L1"),
    StageEntry("resnet18", "gan", "GAN fine-tuning", "cGAN + L1"),
)

MODELS: dict[str, ModelEntry] = {entry.key: entry for entry in (
    ModelEntry("baseline", "baseline", "baseline", ("gan",), "baseline", "baseline",
               "pix2pix U-Net from scratch, cGAN + 100*L1"),
    ModelEntry("L1-pretrained", "L1 only", "resnet18", ("pretrain",), "resnet18-l1", "pretrain",
               "ResNet18-DynamicUnet, L1 only"),
    ModelEntry("pretrained+GAN", "L1 + GAN", "resnet18", ("pretrain", "gan"), "resnet18-gan", "gan",
               "ResNet18-DynamicUnet, L1 pretraining then cGAN + 100*L1"),
)}
FINAL = "pretrained+GAN"  # the model the comparison ends with: the one its old-photos figure shows
GREY = "grey"  # the yardstick's key in a record: the grayscale input itself, scored as a colorization


def stage_entry(recipe: str, stage: str) -> StageEntry:
    for entry in STAGES:
        if (entry.recipe, entry.stage) == (recipe, stage):
            return entry
    raise ValueError(f"no catalogue entry for the {stage} stage of the {recipe} recipe")


def labels() -> dict[str, str]:
    """Record key -> the label tables and figures use (`MODELS`), e.g. "L1-pretrained" -> "L1 only"."""
    return {key: entry.label for key, entry in MODELS.items()}


__all__ = ["FINAL", "GREY", "MODELS", "ModelEntry", "STAGES", "StageEntry", "labels", "stage_entry"]
