"""The book's prose types no measured number: every number in a chapter's markdown is a constant or computed.

A measured number (a loss, a PSNR, a parameter count, a run time) typed into a markdown cell
goes stale the day the code, the data or the published models change. The chapters print
such numbers from code cells (or display a generated paragraph, as chapters 8 and 9 do), or
read them from a committed results file. This test reads every markdown cell of every chapter
and fails on a number that is not in ALLOWED, the constants of the method and its sources,
each with the reason it may be typed.

What it does not see: single digits (counting words, exponents, section-like references: too
common to list), numbers inside code (fenced or inline), link targets and structural numbers
(headings, list items, "chapter 5", "exercise 2 (3 points)").
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.ipynb"))

# value -> why it may be typed in prose (a constant of the method, a format, a paper or a source; never a measurement)
ALLOWED: dict[str, str] = {
    # Lab colour and its scaling (chapter 1)
    "50": "L/50 - 1", "100": "L in [0, 100]; lambda = 100 (pix2pix); 100 epochs of the reference tutorial's baseline",
    "110": "ab/110", "128": "the 8-bit Lab encoding; a power of two (sizes, channels)", "255": "8-bit range",
    "65": "L = 65, the lightness the bins are drawn at (chapter 9's code)",
    "108": "sRGB's |a|, |b| bound in Lab (a property of the colour space)",
    "86": "sRGB's most negative a (pure green)", "98": "sRGB's largest a (magenta)",
    "95": "sRGB's largest b (yellow)",
    "0.5": "a probability of one half; D = 0.5", "0.693": "ln 2", "0.69": "ln 2",
    # architecture and image sizes
    "16": "a power of two (sizes, batch)", "32": "a power of two", "64": "a power of two (the book's CPU size)",
    "256": "pix2pix's image size", "512": "channels", "1024": "channels; the largest size",
    "1000": "ImageNet's classes",
    "70": "the PatchGAN's receptive field (70x70)", "30": "the PatchGAN's 30x30 map at 256 px; an offline crop's scale",
    "34": "receptive field arithmetic 1-4-7-16-34-70", "286": "pix2pix's largest patch (the whole image)",
    "0.02": "pix2pix's init standard deviation", "11": "SSIM's 11 x 11 window",
    "0.3": "the colourfulness formula's coefficient",
    # papers and their settings
    "2003": "Hasler and Suesstrunk", "2004": "Wang et al. (SSIM)", "2014": "Goodfellow et al.; COCO",
    "2015": "Ronneberger et al.", "2016": "Zhang et al.; He et al.", "2017": "Isola et al.; Mao et al.",
    "2018": "Lai et al.", "2019": "DeOldify; Zhang et al. (video)", "2020": "the reference tutorial; fastai; Ho et al.",
    "2022": "Saharia et al. (Palette)",
    "33": "Hasler and Suesstrunk's 'moderately colourful'", "109": "Hasler and Suesstrunk's 'extremely colourful'",
    "313": "Zhang et al.'s number of ab bins", "0.38": "Zhang et al.'s temperature", "150": "Zhang et al.'s AuC range",
    "1.3": "ImageNet's 1.3 million training photos",
    # the reference tutorial's and the data's published settings
    "10,000": "the reference tutorial's photos", "8,000": "its training photos", "8000": "its training photos",
    "2,000": "its validation photos", "20": "its epochs (pretraining, GAN fine-tuning)", "10": "a factor; its epochs",
    "80": "its 80/20 split", "3.2": "the COCO sample's archive size (GB)", "45": "ResNet18's ImageNet weights (MB)",
    "1,556": "the shared photo set (MANIFEST.csv)", "118,287": "COCO train2017's photos",
    # exercises' own settings, and the toy examples' constants (typed in the code beside them)
    "55": "an exercise's 55/45 split", "60": "the toy example's chroma 60",
    # appendix 10's stated assumptions (inputs of an estimate, not measurements)
    "312": "the A100 data sheet's BF16 TFLOPS", "624": "the same with sparsity", "90": "assumed scaling efficiency",
    "75": "assumed scaling efficiency over nodes",
}

NUMBER = re.compile(r"(?<![\w.,])\d+(?:[.,]\d+)*(?![\w])")
STRUCTURE = re.compile(
    r"\b(?:[Cc]hapters?|[Ss]ections?|[Ee]xercises?|[Aa]ppendix|[Ss]teps?|[Ss]tage|[Ll]evel)\s+\d+(?:\.\d+)*"
    r"(?:(?:,\s*|\s+to\s+|\s+and\s+|\s+or\s+|-|–)\d+(?:\.\d+)*)*|\(\d+ points?\)")


def prose(markdown: str) -> str:
    """The text a reader reads as prose: without code, link targets, citations, headings' and list items' numbers."""
    text = re.sub(r"```.*?```", " ", markdown, flags=re.S)
    text = re.sub(r"`[^`\n]*`", " ", text)
    text = re.sub(r"\]\([^)]*\)", "]", text)
    text = re.sub(r"https?://\S+", " ", text)
    text = re.sub(r"\{cite:\w+\}", " ", text)
    text = re.sub(r"^#+\s*\d+(?:\.\d+)*\.?", " ", text, flags=re.M)
    text = re.sub(r"^\s*\d+\.\s", " ", text, flags=re.M)
    return STRUCTURE.sub(" ", text)


def typed_numbers(markdown: str) -> list[str]:
    """The numbers of `markdown`'s prose that are neither single digits nor ALLOWED."""
    return [n for n in NUMBER.findall(prose(markdown)) if len(n) > 1 and n not in ALLOWED]


def test_the_checker_catches_a_hand_typed_measurement_and_spares_constants_code_and_structure():
    assert typed_numbers("The L1 model scores 23.58 dB, grey 23.39.") == ["23.58", "23.39"]
    assert typed_numbers("It took 172 steps, or 1,390 photos.") == ["172", "1,390"]
    assert typed_numbers("At 256 px the PatchGAN sees 70 x 70 patches, with lambda = 100 (Isola et al., 2017).") == []
    code_and_structure = "Run `fit(epochs=12)` or\n```python\nx = 54.4\n```\nas in chapter 12, exercise 13 (4 points)."
    assert typed_numbers(code_and_structure) == []
    assert typed_numbers("## 12. A heading\n\n13. a list item, [a link](page_14.md), ResNet18, val2017") == []
    assert typed_numbers("pix2pix, sections 3.1 and 4.4, appendix 6.1") == []


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_no_markdown_cell_types_a_number_that_code_should_compute(chapter):
    notebook = nbformat.read(chapter, as_version=4)
    typed = {index: numbers for index, cell in enumerate(notebook.cells)
             if cell.cell_type == "markdown" and (numbers := typed_numbers(cell.source))}
    assert not typed, (f"{chapter.name}: numbers typed into markdown cells {typed}: print them from a code cell "
                       "or read them from a committed results file (a constant: add it to ALLOWED with its reason)")
