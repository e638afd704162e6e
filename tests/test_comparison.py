"""colorlab.comparison: chapter 8's table and its reading of the numbers against the reference tutorial's claims."""

from __future__ import annotations

import pytest
import torch

from colorlab.comparison import metrics_table, read_against_reference


def _constant_colour(a: float, b: float) -> torch.nn.Module:
    """A 'colorizer' that paints every pixel with the normalised colour (a, b)."""
    paint = torch.nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        paint.weight.zero_()
        paint.bias.copy_(torch.tensor([a, b]))
    return paint


def test_chapter_8_reads_the_numbers_against_the_reference_tutorial_and_says_where_they_disagree():
    batches = [(torch.zeros(2, 1, 8, 8), torch.full((2, 2, 8, 8), 0.1))]  # truth: a = b = 11 Lab units
    def scores(psnr, colourfulness):
        return {"psnr": psnr, "ssim": 0.9, "colourfulness": colourfulness, "colourfulness_true": 40.0,
                "dCF": colourfulness - 40.0, "saturation": 0.2, "saturation_true": 0.3,
                "ab_out_of_range": 0.01, "high_chroma": 0.05, "high_chroma_true": 0.009}

    models = {"baseline": _constant_colour(0.1, 0.3), "L1 only": _constant_colour(0, 0),
              "L1 + GAN": _constant_colour(0.2, 0.2)}
    reference_like = {"baseline": scores(21.0, 30.0), "L1 only": scores(23.5, 8.0), "L1 + GAN": scores(20.0, 46.0)}
    text = read_against_reference(reference_like, models, batches)
    assert "disagree" not in text
    assert ("a = +11.0, b = +33.0 (a cast of chroma 34.8 at hue 72°), the photos' a = +11.0, b = +11.0 "
            "(chroma 15.6): a stronger orange-brown cast than the truth, so the numbers agree") in text
    assert "PSNR ranks L1 only first (23.50 dB)" in text
    assert "from 8.0 to 46.0 (dCF +6.0): the numbers agree, and it overshoots" in text

    models["baseline"] = _constant_colour(0.1, -0.3)  # a blue baseline, and a GAN duller than L1
    contrary = reference_like | {"L1 + GAN": scores(24.0, 5.0)}
    paragraphs = read_against_reference(contrary, models, batches).split("\n\n")
    assert "no stronger orange-brown cast" in paragraphs[0] and "disagree" in paragraphs[0]
    assert "least colourful of the three is L1 + GAN: **here the numbers disagree" in paragraphs[1]
    assert "disagree" in paragraphs[2] and "PSNR rises from 23.50 to 24.00 dB." in paragraphs[2]

    table = metrics_table(reference_like)
    assert list(table.index) == ["baseline", "L1 only", "L1 + GAN", "ground truth"]
    assert table.loc["ground truth", "colourfulness"] == 40.0 and table.loc["L1 only", "PSNR (dB)"] == 23.5
    # the over-saturation diagnostics in percent, the truth's own share of high-chroma pixels beside them
    assert table.loc["L1 + GAN", "chroma > 66 (%)"] == pytest.approx(5.0)
    assert table.loc["ground truth", "chroma > 66 (%)"] == pytest.approx(0.9)
    assert table.loc["baseline", "ab outside [-1, 1] (%)"] == pytest.approx(1.0)
