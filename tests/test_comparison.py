"""colorlab.comparison: chapter 8's table and its reading of the numbers against the reference tutorial's claims."""

from __future__ import annotations

import pytest
import torch

import json

from colorlab.comparison import GREY, against_grey, committed_results, metrics_table, read_against_reference


def _constant_colour(a: float, b: float) -> torch.nn.Module:
    """A 'colorizer' that paints every pixel with the normalised colour (a, b)."""
    paint = torch.nn.Conv2d(1, 2, kernel_size=1)
    with torch.no_grad():
        paint.weight.zero_()
        paint.bias.copy_(torch.tensor([a, b]))
    return paint


def _scores(psnr, colourfulness, ssim=0.9):
    return {"psnr": psnr, "ssim": ssim, "colourfulness": colourfulness, "colourfulness_true": 40.0,
            "dCF": colourfulness - 40.0, "saturation": 0.2, "saturation_true": 0.3,
            "ab_out_of_range": 0.01, "high_chroma": 0.05, "high_chroma_true": 0.009}


BATCHES = [(torch.zeros(2, 1, 8, 8), torch.full((2, 2, 8, 8), 0.1))]  # truth: a = b = 11 Lab units
# the reference tutorial's picture, with the grey yardstick of metrics.json["metrics"]["grey"] (ab = 0: colourfulness 0)
REFERENCE_LIKE = {"baseline": _scores(21.0, 30.0), "L1 only": _scores(23.5, 8.0), "L1 + GAN": _scores(20.0, 46.0),
                  GREY: _scores(23.4, 0.0, ssim=0.913)}


def _models(l1=(0.1, 0.3)):
    return {"baseline": _constant_colour(0.1, -0.3), "L1 only": _constant_colour(*l1),
            "L1 + GAN": _constant_colour(0.2, 0.2)}


def test_chapter_8_reads_the_numbers_against_the_reference_tutorial_and_says_where_they_disagree():
    text = read_against_reference(REFERENCE_LIKE, _models(), BATCHES)
    assert "disagree" not in text
    assert ("a = +11.0, b = +33.0 (a cast of chroma 34.8 at hue 72°), the photos' a = +11.0, b = +11.0 "
            "(chroma 15.6): a stronger orange-brown cast than the truth") in text  # L1 only's brown
    assert "No number here measures spills or circles" in text  # the baseline's failures, as the tutorial names them
    assert "PSNR ranks L1 only first (23.50 dB)" in text
    assert "from 8.0 to 46.0 (dCF +6.0): the numbers agree, and it overshoots" in text

    contrary = REFERENCE_LIKE | {"L1 + GAN": _scores(24.0, 5.0)}  # a GAN duller than L1, and a blue L1 model
    paragraphs = read_against_reference(contrary, _models(l1=(0.1, -0.3)), BATCHES).split("\n\n")
    assert paragraphs[0].startswith("**The grey yardstick.**")
    assert "no stronger orange-brown cast" in paragraphs[2]
    assert "least colourful of the three is L1 + GAN: **here the numbers disagree" in paragraphs[2]
    assert "disagree" in paragraphs[3] and "PSNR rises from 23.50 to 24.00 dB." in paragraphs[3]


def test_the_reading_says_plainly_which_models_beat_the_grey_yardstick_on_psnr():
    text = against_grey(REFERENCE_LIKE)
    assert "scores 23.40 dB PSNR and SSIM 0.913, with colourfulness 0.0 against the photos' 40.0" in text
    assert "On PSNR, L1 only (23.50 dB) beats it; baseline (21.00 dB) and L1 + GAN (20.00 dB) do not" in text
    nobody = REFERENCE_LIKE | {"L1 only": _scores(23.0, 8.0)}
    assert "**no model beats it**: baseline (21.00 dB), L1 only (23.00 dB) and L1 + GAN (20.00 dB) all score lower" \
        in against_grey(nobody)
    everyone = {name: _scores(30.0, 20.0) for name in ("baseline", "L1 only")} | {GREY: _scores(23.4, 0.0)}
    assert "On PSNR, baseline (30.00 dB) and L1 only (30.00 dB) beat it." in against_grey(everyone)
    without = {name: scores for name, scores in REFERENCE_LIKE.items() if name != GREY}
    assert against_grey(without) is None
    assert "grey yardstick" not in read_against_reference(without, _models(), BATCHES)


def test_every_results_table_has_the_grey_row_and_the_truth_and_renders_without_grey():
    table = metrics_table(REFERENCE_LIKE)
    assert list(table.index) == ["baseline", "L1 only", "L1 + GAN", GREY, "ground truth"]
    assert table.loc[GREY, "PSNR (dB)"] == 23.4 and table.loc[GREY, "SSIM"] == 0.913
    assert table.loc["ground truth", "colourfulness"] == 40.0 and table.loc["L1 only", "PSNR (dB)"] == 23.5
    # the over-saturation diagnostics in percent, the truth's own share of high-chroma pixels beside them
    assert table.loc["L1 + GAN", "chroma > 66 (%)"] == pytest.approx(5.0)
    assert table.loc["ground truth", "chroma > 66 (%)"] == pytest.approx(0.9)
    assert table.loc["baseline", "ab outside [-1, 1] (%)"] == pytest.approx(1.0)
    without = {name: scores for name, scores in REFERENCE_LIKE.items() if name != GREY}
    assert list(metrics_table(without).index) == ["baseline", "L1 only", "L1 + GAN", "ground truth"]


def test_committed_results_use_chapter_8s_names_and_are_none_without_the_file(tmp_path):
    experiment = {"baseline": _scores(21.0, 30.0), "L1-pretrained": _scores(23.5, 8.0),
                  "pretrained+GAN": _scores(20.0, 46.0), "grey": _scores(23.4, 0.0)}
    (tmp_path / "metrics.json").write_text(json.dumps({"n_val": 119, "metrics": experiment}))
    record = committed_results(tmp_path)
    assert list(record["metrics"]) == ["baseline", "L1 only", "L1 + GAN", GREY] and record["n_val"] == 119
    assert list(metrics_table(record["metrics"]).index)[-2:] == [GREY, "ground truth"]
    assert committed_results(tmp_path / "elsewhere") is None
