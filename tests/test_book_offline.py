"""Reading the book offline, its bibliography, and the landing page's per-chapter table.

The rendered pages must load no script or stylesheet from another host (MathJax comes from the
build), every citation must resolve, and the run times on the landing page must come from the
build that made the website, never from a hand-edited source.
"""

from __future__ import annotations

import datetime
import importlib.util
import os
import re
import shutil
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)

LANDING = ROOT / "book" / "index.md"
BIBLIOGRAPHY = ROOT / "book" / "references.bib"
# The works the issue asks for: pix2pix, U-Net, GAN, Zhang et al. 2016, DeOldify's NoGAN,
# Hasler & Süsstrunk 2003, COCO, ImageNet.
REQUIRED_WORKS = {
    "isola2017pix2pix", "ronneberger2015unet", "goodfellow2014gan", "zhang2016colorful",
    "antic2019deoldify", "hasler2003colourfulness", "lin2014coco", "deng2009imagenet",
}
NOT_MEASURED = ["a CPU build writes it", "a GPU build writes it"]  # what book/index.md says until a build measures
CITATION = re.compile(r"\{cite(?::\w+)?\}`([^`]+)`")


def _bib_keys() -> list[str]:
    return re.findall(r"^@\w+\{([^,\s]+),", BIBLIOGRAPHY.read_text(encoding="utf-8"), re.MULTILINE)


def _cited_keys() -> dict[str, set[str]]:
    """key -> the pages citing it, from markdown pages and notebooks' markdown cells."""
    cited: dict[str, set[str]] = {}
    for page in build_book.toc_pages():
        if page.suffix == ".ipynb":
            texts = [c.source for c in nbformat.read(page, as_version=4).cells if c.cell_type == "markdown"]
        else:
            texts = [page.read_text(encoding="utf-8")]
        for keys in (match for text in texts for match in CITATION.findall(text)):
            for key in keys.split(","):
                cited.setdefault(key.strip(), set()).add(page.name)
    return cited


def _table_row(text: str, chapter: str) -> list[str]:
    (row,) = [line for line in text.splitlines() if line.startswith("|") and f"]({chapter})" in line]
    return [cell.strip() for cell in row.strip("|").split("|")]


# --- bibliography ---------------------------------------------------------------------------


def test_bibliography_holds_each_required_work_once():
    keys = _bib_keys()
    assert len(keys) == len(set(keys)), "duplicate keys in references.bib"
    assert REQUIRED_WORKS <= set(keys)


def test_every_citation_resolves_and_every_work_is_cited():
    cited = _cited_keys()
    assert set(cited) - set(_bib_keys()) == set(), "cited but not in references.bib"
    assert set(_bib_keys()) - set(cited) == set(), "in references.bib but cited nowhere"
    assert len({page for pages in cited.values() for page in pages}) >= 6, "the chapters cite their sources"


# --- no script from another host --------------------------------------------------------------


def test_external_loads_reports_scripts_and_stylesheets_from_other_hosts(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "index.html").write_text(
        '<script src="_static/mathjax/tex-chtml.js"></script><script>var inline = 1;</script>'
        '<link rel="stylesheet" href="_static/theme.css"><a href="https://example.org/">a link is fine</a>'
    )
    (tmp_path / "sub" / "page.html").write_text(
        '<script defer src="https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js"></script>'
        '<script src="//cdnjs.cloudflare.com/require.js"></script>'
        '<link href="https://fonts.example.com/a.css" rel="preload stylesheet">'
    )
    assert build_book.external_loads(tmp_path) == [
        "sub/page.html: https://cdn.jsdelivr.net/npm/mathjax@3/es5/tex-chtml.js",
        "sub/page.html: //cdnjs.cloudflare.com/require.js",
        "sub/page.html: https://fonts.example.com/a.css",
    ]


@pytest.mark.slow
def test_rendered_book_reads_offline_with_math_and_citations(tmp_path):
    """Render the committed chapters (no execution): the theme, MathJax and the bibliography."""
    staging = tmp_path / "src"
    build_book.stage(staging)
    assert build_book.build_html(staging, tmp_path) == 0, "jupyter-book build -W failed (see the output)"

    html = tmp_path / "_build" / "html"
    assert build_book.external_loads(html) == []
    assert (html / "_static" / "mathjax" / "tex-chtml.js").is_file()
    chapter = (html / "book" / "04_patchgan_loss.html").read_text(encoding="utf-8")
    assert 'src="../_static/mathjax/tex-chtml.js"' in chapter
    assert re.search(r'href="references\.html#[^"]+"[^>]*>Isola', chapter), "a citation links to its entry"
    references = (html / "book" / "references.html").read_text(encoding="utf-8")
    for title in ("Image-to-image translation", "Colorful image colorization", "Microsoft COCO", "NoGAN"):
        assert title in references


# --- the landing page's chapter table ---------------------------------------------------------


def test_every_chapter_has_a_row_whose_run_times_are_left_to_the_build():
    text = LANDING.read_text(encoding="utf-8")
    assert build_book.RUNTIME_NOTE in text
    for chapter in build_book.toc_chapters():
        cells = _table_row(text, chapter.name)
        assert cells[1:3] == NOT_MEASURED, f"{chapter.name}: run times are written by the build"
        assert all(cells[3:6]), f"{chapter.name}: say what it needs (internet, GPU, data)"


def test_the_build_writes_measured_times_into_the_staged_landing_page(tmp_path):
    landing = tmp_path / "book" / "index.md"
    landing.parent.mkdir()
    shutil.copy(LANDING, landing)
    chapters = {landing.parent / "01_lab_colour.ipynb": 12.3, landing.parent / "05_baseline.ipynb": 200.0}

    build_book.write_runtime_table(landing, chapters, "cpu", {"size": 64, "smoke": True})

    text = landing.read_text(encoding="utf-8")
    assert _table_row(text, "01_lab_colour.ipynb")[1:3] == ["12 s", NOT_MEASURED[1]]
    assert _table_row(text, "05_baseline.ipynb")[1:3] == ["3.3 min", NOT_MEASURED[1]]
    assert _table_row(text, "03_unet.ipynb")[1:3] == NOT_MEASURED  # not run: left alone
    assert build_book.RUNTIME_NOTE not in text
    assert f"a {os.cpu_count()}-core" in text and datetime.date.today().isoformat() in text
    assert "`size=64`, `smoke=True`" in text


def test_a_gpu_build_fills_the_gpu_column(tmp_path):
    landing = tmp_path / "index.md"
    shutil.copy(LANDING, landing)
    build_book.write_runtime_table(landing, {tmp_path / "02_data.ipynb": 4.0}, "cuda", {})
    text = landing.read_text(encoding="utf-8")
    assert _table_row(text, "02_data.ipynb")[1:3] == [NOT_MEASURED[0], "4 s"]
    assert re.search(r"on an? [^,]*GPU, on ", text) and "the chapters' own defaults" in text


def test_a_chapter_without_a_row_stops_the_build_with_its_name(tmp_path):
    landing = tmp_path / "index.md"
    shutil.copy(LANDING, landing)
    with pytest.raises(ValueError, match="09_new_chapter.ipynb"):
        build_book.write_runtime_table(landing, {tmp_path / "09_new_chapter.ipynb": 1.0}, "cpu", {})


@pytest.mark.parametrize("parameters, device", [({"device": "cpu"}, "cpu"), ({"device": "cuda:1"}, "cuda")])
def test_the_column_follows_the_device_the_chapters_ran_on(parameters, device):
    assert build_book.run_device(parameters) == device
