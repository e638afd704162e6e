"""Chapter 8's comparison of the three models: the results table, and its reading against the reference tutorial.

The reference tutorial (the one this book replaces) makes three claims about its models: the
baseline U-Net gets common things right but spills colour and paints circle-shaped masses of it,
L1 alone is conservative (grey or brown) when unsure, the GAN stage is more vivid.
`read_against_reference` tests each claim that a number can test, and measures every model
against the grey yardstick (ab = 0, the black-and-white input itself), so chapter 8's text stays
true when the models or the photos change.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch
from torch import nn

from .catalogue import GREY, labels
from .color import AB_SCALE
from .evaluate import HIGH_CHROMA, Grey

# "a brown cast": the mean predicted colour is this many Lab units further from grey than the photos' mean
# colour, at an orange-to-yellow hue angle (degrees in the a-b plane; brown is a dark orange)
BROWN_MARGIN, BROWN_HUES = 1.0, (20.0, 100.0)


def grey_colorizer() -> nn.Module:
    """The grey yardstick as a model: ab = 0 everywhere, the black-and-white input itself (`evaluate.Grey`)."""
    return Grey()


def committed_results(folder: str | Path | None = None) -> dict | None:
    """A `colorlab experiment` folder's metrics.json, by default results/cpu64 beside the book
    (`book.recorded_results`): its record (command, date, n_val, ...) with "metrics" keyed by chapter 8's
    names (and "grey" when the run measured the yardstick); None where the file is not at hand (a pip
    install has no results/ folder)."""
    from .book import recorded_results

    folder = folder or recorded_results("cpu64")
    path = Path(folder or "") / "metrics.json"
    if not folder or not path.is_file():
        return None
    record = json.loads(path.read_text(encoding="utf-8"))
    record["metrics"] = {labels().get(name, name): scores for name, scores in record["metrics"].items()}
    return record


def _names(models: list[str]) -> str:
    return " and ".join([", ".join(models[:-1]), models[-1]] if len(models) > 2 else models)


def against_grey(results: dict[str, dict]) -> str | None:
    """One paragraph: the grey yardstick's scores, the truth's colourfulness, and which models beat grey on PSNR.

    None when `results` has no GREY entry (a metrics.json written before the yardstick was measured).
    """
    if GREY not in results:
        return None
    grey = results[GREY]
    models = {name: scores for name, scores in results.items() if name != GREY}
    above = [name for name, scores in models.items() if scores["psnr"] > grey["psnr"]]
    below = [name for name in models if name not in above]

    def listed(names: list[str]) -> str:
        return _names([f"{name} ({models[name]['psnr']:.2f} dB)" for name in names])

    verdict = (f"On PSNR, {listed(above)} {'beats' if len(above) == 1 else 'beat'} it" if above else
               "On PSNR, **no model beats it**")
    if below and above:
        verdict += f"; {listed(below)} {'does' if len(below) == 1 else 'do'} not"
    elif below:
        verdict += f": {listed(below)} all score lower"
    return (f"**The grey yardstick.** Painting no colour at all (ab = 0) scores {grey['psnr']:.2f} dB PSNR and "
            f"SSIM {grey['ssim']:.3f}, with colourfulness {grey['colourfulness']:.1f} against the photos' "
            f"{grey['colourfulness_true']:.1f}. {verdict}"
            + (": where their colours are wrong they cost more than they gain where they are right."
               if below else "."))


@torch.no_grad()
def mean_ab(model: nn.Module | None, batches: list) -> tuple[float, float]:
    """The mean (a, b) in Lab units of a model's predictions over `batches`; with None, of the true colours."""
    ab = torch.cat([(model.eval()(L).float().clamp(-1, 1) if model is not None else ab) for L, ab in batches])
    a, b = (ab.mean(dim=(0, 2, 3)) * AB_SCALE).tolist()
    return a, b


def read_against_reference(results: dict[str, dict], models: dict[str, nn.Module], batches: list) -> str:
    """Chapter 8's reading of the three published models against the reference tutorial's claims, from their numbers.

    `results` and `models` are keyed "baseline", "L1 only", "L1 + GAN"; `results` may also hold the
    grey yardstick (GREY), which then opens the reading (`against_grey`). Each paragraph says
    whether the numbers agree with the reference tutorial, or that no number here can tell; none
    of the numbers is typed in by hand. "Brown" is tested on the mean predicted colour
    (BROWN_MARGIN, BROWN_HUES).
    """
    base, l1, gan = (results[name] for name in ("baseline", "L1 only", "L1 + GAN"))
    (a_true, b_true) = mean_ab(None, batches)
    true_cast = math.hypot(a_true, b_true)

    def cast(model: nn.Module) -> tuple[str, bool]:
        a, b = mean_ab(model, batches)
        chroma, hue = math.hypot(a, b), math.degrees(math.atan2(b, a))
        brown = chroma > true_cast + BROWN_MARGIN and BROWN_HUES[0] <= hue <= BROWN_HUES[1]
        return (f"a = {a:+.1f}, b = {b:+.1f} (a cast of chroma {chroma:.1f} at hue {hue:.0f}°), the photos' "
                f"a = {a_true:+.1f}, b = {b_true:+.1f} (chroma {true_cast:.1f})"), brown

    base_cast, _ = cast(models["baseline"])
    l1_cast, l1_brown = cast(models["L1 only"])
    least = min((name for name in results if name != GREY), key=lambda name: results[name]["colourfulness"])
    best_psnr = max(results, key=lambda name: results[name]["psnr"])

    def verdict(agrees: bool) -> str:
        return "the numbers agree" if agrees else "**here the numbers disagree with the reference tutorial**"

    paragraphs = [against_grey(results)] if GREY in results else []
    return "\n\n".join(paragraphs + [
        f"**Baseline: spills and circles of colour.** The reference tutorial finds its U-Net from scratch right "
        f"on common things such as sky and trees, undecided on rarer objects, with colour spilling over edges and "
        f"circle-shaped masses of colour. No number here measures spills or circles: look for them in the grid. "
        f"Its mean predicted colour is {base_cast}; its dCF is {base['dCF']:+.1f}.",
        f"**L1 only: grey or brown when unsure.** Its colourfulness is {l1['colourfulness']:.1f} against the "
        f"photos' {l1['colourfulness_true']:.1f} (dCF {l1['dCF']:+.1f}), and the least colourful of the three "
        f"is {least}: {verdict(l1['dCF'] < 0 and least == 'L1 only')}. Its mean predicted colour is {l1_cast}: "
        f"{'a' if l1_brown else 'no'} stronger orange-brown cast than the truth. PSNR ranks {best_psnr} first "
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
    """Chapter 8's results table (a pandas DataFrame): one row per model, the grey yardstick's, then the truth's.

    The grey row (GREY, ab = 0) is every model's yardstick; a `results` without it (a metrics.json
    written before it was measured) gives the table without that row. Beside the quality metrics
    it shows the over-saturation diagnostics of `colorlab.evaluate` in percent of pixels (raw ab
    outside [-1, 1]; chroma above `evaluate.HIGH_CHROMA`), the symptom of the GAN stage's red
    blotches (chapter 7).
    """
    import pandas as pd

    columns = {"psnr": "PSNR (dB)", "ssim": "SSIM", "colourfulness": "colourfulness", "dCF": "dCF",
               "saturation": "saturation", "ab_out_of_range": "ab outside [-1, 1] (%)",
               "high_chroma": f"chroma > {HIGH_CHROMA:.0f} (%)"}
    rows = [name for name in results if name != GREY] + ([GREY] if GREY in results else [])
    table = pd.DataFrame(results).T.loc[rows, list(columns)].astype(float)
    table[["ab_out_of_range", "high_chroma"]] *= 100
    table = table.rename(columns=columns)
    truth = results.get(GREY) or next(iter(results.values()))  # the ground-truth columns are the same in every row
    table.loc["ground truth"] = [float("inf"), 1.0, truth["colourfulness_true"], 0.0, truth["saturation_true"],
                                 0.0, 100 * truth["high_chroma_true"]]
    return table


__all__ = ["GREY", "against_grey", "committed_results", "grey_colorizer",
           "mean_ab", "metrics_table", "read_against_reference"]
