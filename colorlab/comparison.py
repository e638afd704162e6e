"""Chapter 8's comparison of the three models: the results table, and its reading against the reference tutorial.

The reference tutorial (the one this book replaces) makes three claims about its models: the
baseline U-Net is brownish, L1 alone is greyish when unsure, the GAN stage is more vivid.
`read_against_reference` tests each claim on the numbers, so chapter 8's text stays true when
the models or the photos change.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .color import AB_SCALE
from .evaluate import HIGH_CHROMA

# "a brown cast": the mean predicted colour is this many Lab units further from grey than the photos' mean
# colour, at an orange-to-yellow hue angle (degrees in the a-b plane; brown is a dark orange)
BROWN_MARGIN, BROWN_HUES = 1.0, (20.0, 100.0)


@torch.no_grad()
def mean_ab(model: nn.Module | None, batches: list) -> tuple[float, float]:
    """The mean (a, b) in Lab units of a model's predictions over `batches`; with None, of the true colours."""
    ab = torch.cat([(model.eval()(L).float().clamp(-1, 1) if model is not None else ab) for L, ab in batches])
    a, b = (ab.mean(dim=(0, 2, 3)) * AB_SCALE).tolist()
    return a, b


def read_against_reference(results: dict[str, dict], models: dict[str, nn.Module], batches: list) -> str:
    """Chapter 8's reading of the three published models against the reference tutorial's claims, from their numbers.

    `results` and `models` are keyed "baseline", "L1 only", "L1 + GAN". Each paragraph says
    whether the numbers agree with the reference tutorial; none of the numbers is typed in by hand.
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
        return "the numbers agree" if agrees else "**here the numbers disagree with the reference tutorial**"

    return "\n\n".join([
        f"**Baseline: brown tones and spills.** The reference tutorial finds the U-Net from scratch brownish. Its mean "
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
    """Chapter 8's results table (a pandas DataFrame): one row per model, then the ground truth's row.

    Beside the quality metrics it shows the over-saturation diagnostics of `colorlab.evaluate`
    in percent of pixels (raw ab outside [-1, 1]; chroma above `evaluate.HIGH_CHROMA`), the
    symptom of the GAN stage's red blotches (chapter 7).
    """
    import pandas as pd

    columns = {"psnr": "PSNR (dB)", "ssim": "SSIM", "colourfulness": "colourfulness", "dCF": "dCF",
               "saturation": "saturation", "ab_out_of_range": "ab outside [-1, 1] (%)",
               "high_chroma": f"chroma > {HIGH_CHROMA:.0f} (%)"}
    table = pd.DataFrame(results).T[list(columns)].astype(float)
    table[["ab_out_of_range", "high_chroma"]] *= 100
    table = table.rename(columns=columns)
    truth = next(iter(results.values()))  # the ground-truth columns are the same in every row
    table.loc["ground truth"] = [float("inf"), 1.0, truth["colourfulness_true"], 0.0, truth["saturation_true"],
                                 0.0, 100 * truth["high_chroma_true"]]
    return table


__all__ = ["metrics_table", "mean_ab", "read_against_reference"]
