"""What the book's chapters share beyond the library: the published-model-or-own-training choice.

A chapter teaches the mechanics on a short training run of its own (loss curves, exercises),
but a short CPU run cannot show what a method achieves. So the pictures and numbers meant to
show that come from the published model of the chapter's stage (`colorlab.hub`) when there
is one, which the chapter says in one line; otherwise from its own short run, said just as
plainly, with the way to get the real ones. The chapters' `published` parameter decides:
"auto" (the published model when its file is here), "none" (always the chapter's own run),
or a model name (that model for its stage, downloaded if need be).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from torch import nn

from . import hub
from .data import shared_data_dir
from .io import SkippedImageWarning, list_images, scan_images
from .recipes import val_batches

# a chapter's training stage -> the published model of that stage, without its "-SIZE"
STAGE_MODELS = {"baseline": "baseline", "pretrain": "resnet18-l1", "gan": "resnet18-gan"}
SHOWCASE_PHOTOS = 32  # validation photos a chapter shows a published model on (all of them in chapter 8)
# "a brown cast": the mean predicted colour is this many Lab units further from grey than the photos' mean
# colour, at an orange-to-yellow hue angle (degrees in the a-b plane; brown is a dark orange)
BROWN_MARGIN, BROWN_HUES = 1.0, (20.0, 100.0)


@dataclass
class Showcase:
    """The model whose pictures and numbers a chapter shows for a stage, and on which photos."""

    model: nn.Module
    label: str  # "published model NAME" or "this chapter's short run": used in the chapter's titles
    batches: list[tuple[torch.Tensor, torch.Tensor]]  # validation (L, ab) batches
    photos: str  # what those photos are
    published: bool


def published_name(stage: str, published: str, size: int) -> str | None:
    """The published model that stands for `stage` in a chapter of image size `size`, or None for its own run.

    A forced name that belongs to another stage leaves this stage to "auto"; one made for
    another image size is refused, since the chapter's photos are `size` px.
    """
    if stage not in STAGE_MODELS:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(STAGE_MODELS)}")
    if published == "none":
        return None
    if published != "auto":
        model = hub.get(published)
        if model.name.startswith(STAGE_MODELS[stage] + "-"):
            if model.spec["size"] != size:
                raise ValueError(f"published={published!r} is a {model.spec['size']} px model; "
                                 f"run the chapter with size={model.spec['size']}")
            return model.name
    name = f"{STAGE_MODELS[stage]}-{size}"
    return name if name in hub.MODELS and hub.is_available(name) else None


def showcase(stage: str, published: str, trained: nn.Module, val: list, size: int,
             device: str | torch.device = "cpu") -> Showcase:
    """The published model of `stage` (on the project's held-out photos when they are here), else `trained`.

    Prints one line saying which, and for a published model what it was trained on.
    """
    name = published_name(stage, published, size)
    if name is None:
        print(f"Shown below: this chapter's short run ({why_not_published(stage, published, size)}).")
        return Showcase(trained, "this chapter's short run", val, "this chapter's validation images", False)
    model = hub.load_pretrained(name, device)
    print(f"Shown below: the published model {model.published.describe()}.")
    batches, photos = held_out_batches(size, device, SHOWCASE_PHOTOS) or (val, "this chapter's validation images")
    return Showcase(model, f"published model {name}", batches, photos, True)


def why_not_published(stage: str, published: str, size: int) -> str:
    """Why no published model stands for `stage`, and how to get one: for the line a chapter prints."""
    if published == "none":
        return "published='none'"
    names = [name for name in hub.MODELS if name.startswith(STAGE_MODELS[stage] + "-")]
    same_size = [name for name in names if hub.MODELS[name].spec["size"] == size]
    if not same_size:
        return f"no published model of this stage for {size} px; published ones: {', '.join(names) or 'none'}"
    return (f"the file of the published {same_size[0]} is not here; `colorlab models fetch {same_size[0]}` or "
            f"published='{same_size[0]}' gets it")


def held_out_batches(size: int, device: str | torch.device, n_photos: int | None = None) -> tuple[list, str] | None:
    """(batches, description) of the project's validation photos (COCO val2017), or None when they are not here.

    The published models never saw them. Grayscale photos are left out, as in training.
    """
    root = shared_data_dir()
    if root is None or not (root / "photos" / "val").is_dir():
        return None
    with warnings.catch_warnings():  # the grayscale ones are expected, and said in the description
        warnings.simplefilter("ignore", SkippedImageWarning)
        files = scan_images(list_images(root / "photos" / "val")).kept[:n_photos]
    return val_batches(files, size, device), f"{len(files)} held-out photos of ../shared/data/photos/val (COCO val2017)"


@torch.no_grad()
def mean_ab(model: nn.Module | None, batches: list) -> tuple[float, float]:
    """The mean (a, b) in Lab units of a model's predictions over `batches`; with None, of the true colours."""
    from .color import AB_SCALE

    ab = torch.cat([(model.eval()(L).float().clamp(-1, 1) if model is not None else ab) for L, ab in batches])
    a, b = (ab.mean(dim=(0, 2, 3)) * AB_SCALE).tolist()
    return a, b


def read_against_seed(results: dict[str, dict], models: dict[str, nn.Module], batches: list) -> str:
    """Chapter 8's reading of the three published models against the seed's claims, from their numbers.

    `results` and `models` are keyed "baseline", "L1 only", "L1 + GAN". Each paragraph says
    whether the numbers agree with the seed; none of the numbers is typed in by hand.
    "Brown" is tested on the mean predicted colour (BROWN_MARGIN, BROWN_HUES).
    """
    base, l1, gan = (results[name] for name in ("baseline", "L1 only", "L1 + GAN"))
    (a_base, b_base), (a_true, b_true) = mean_ab(models["baseline"], batches), mean_ab(None, batches)
    cast, true_cast = math.hypot(a_base, b_base), math.hypot(a_true, b_true)
    hue = math.degrees(math.atan2(b_base, a_base))
    brown = cast > true_cast + BROWN_MARGIN and BROWN_HUES[0] <= hue <= BROWN_HUES[1]
    least = min(results, key=lambda name: results[name]["colourfulness"])
    best_psnr = max(results, key=lambda name: results[name]["psnr"])

    def verdict(agrees: bool) -> str:
        return "the numbers agree" if agrees else "**here the numbers disagree with the seed**"

    return "\n\n".join([
        f"**Baseline: brown tones and spills.** The seed finds the U-Net from scratch brownish. Its mean "
        f"predicted colour is a = {a_base:+.1f}, b = {b_base:+.1f} (a cast of chroma {cast:.1f} at hue {hue:.0f}°), "
        f"the photos' a = {a_true:+.1f}, b = {b_true:+.1f} (chroma {true_cast:.1f}): "
        f"{'a' if brown else 'no'} stronger orange-brown cast than the truth, so {verdict(brown)}. Its dCF is "
        f"{base['dCF']:+.1f}. No number here measures colour spilling across edges: look for it in the grid.",
        f"**L1 only: greyish when unsure.** Its colourfulness is {l1['colourfulness']:.1f} against the "
        f"photos' {l1['colourfulness_true']:.1f} (dCF {l1['dCF']:+.1f}), and the least colourful of the three "
        f"is {least}: {verdict(l1['dCF'] < 0 and least == 'L1 only')}. PSNR ranks {best_psnr} first "
        f"({results[best_psnr]['psnr']:.2f} dB), as section 4 predicts for cautious colours.",
        f"**L1 + GAN: more vivid.** The GAN stage moves the colourfulness from {l1['colourfulness']:.1f} to "
        f"{gan['colourfulness']:.1f} (dCF {gan['dCF']:+.1f}): "
        f"{verdict(gan['colourfulness'] > l1['colourfulness'])}"
        + (", and it overshoots: louder than the photos themselves" if gan["dCF"] > 0 else "")
        + f". Its PSNR {'drops' if gan['psnr'] < l1['psnr'] else 'rises'} from {l1['psnr']:.2f} to "
          f"{gan['psnr']:.2f} dB" + (": the price of committing to colours that are sometimes wrong."
                                     if gan["psnr"] < l1["psnr"] else "."),
    ])


def metrics_table(results: dict[str, dict]):
    """Chapter 8's results table (a pandas DataFrame): one row per model, then the ground truth's row."""
    import pandas as pd

    columns = {"psnr": "PSNR (dB)", "ssim": "SSIM", "colourfulness": "colourfulness", "dCF": "dCF",
               "saturation": "saturation"}
    table = pd.DataFrame(results).T[list(columns)].rename(columns=columns)
    truth = next(iter(results.values()))  # the ground-truth columns are the same in every row
    table.loc["ground truth"] = [float("inf"), 1.0, truth["colourfulness_true"], 0.0, truth["saturation_true"]]
    return table
