"""colorlab.book's view of the book itself: where it is, what a chapter's parameters cell declares,
and the data a chapter falls back to."""

from __future__ import annotations

from pathlib import Path

import nbformat
import papermill
import pytest

from colorlab import book, data

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("[0-9]*.ipynb"))


def _notebook(*cells: nbformat.NotebookNode) -> nbformat.NotebookNode:
    nb = nbformat.v4.new_notebook()
    nb.cells = list(cells)
    return nb


def _parameters_cell(source: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_code_cell(source, metadata={"tags": ["parameters"]})


def test_the_book_is_found_from_the_working_directory_not_from_the_package(tmp_path, monkeypatch):
    (tmp_path / "book" / "part").mkdir(parents=True)
    (tmp_path / "_toc.yml").write_text("root: book/index\n")
    monkeypatch.chdir(tmp_path / "book" / "part")  # anywhere inside a repository
    assert book.find_book() == tmp_path / "book"
    monkeypatch.chdir(ROOT)
    assert book.find_book() == ROOT / "book"


def test_outside_a_repository_the_book_is_one_clear_error_unless_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"^no book here: .* run from the repository or name the chapters'"):
        book.find_book()
    assert book.find_book(tmp_path) == tmp_path  # an explicit folder is taken as it is
    with pytest.raises(FileNotFoundError, match="is not a folder of chapters"):
        book.find_book(tmp_path / "missing")


def test_declared_parameters_are_the_top_level_names_of_the_tagged_cell_in_order():
    nb = _notebook(
        nbformat.v4.new_code_cell("before = 1"),
        _parameters_cell("# knobs\nsize: int = 64  # px\nlr = 2e-4\na, (b, c) = 1, (2, 3)\n"
                         "first = second = 0\nnote: str | None = None\nif False:\n    hidden = 1\nsize = 32"),
        nbformat.v4.new_code_cell("after = 2"),
    )
    assert book.declared_parameters(nb) == ["size", "lr", "a", "b", "c", "first", "second", "note"]


def test_a_notebook_without_a_readable_parameters_cell_declares_nothing():
    assert book.declared_parameters(_notebook(nbformat.v4.new_code_cell("size = 64"))) == []
    assert book.declared_parameters(_notebook(_parameters_cell("size = = 64"))) == []


@pytest.mark.parametrize("chapter", CHAPTERS, ids=lambda path: path.stem)
def test_declared_parameters_agree_with_papermill_on_every_chapter(chapter):
    assert book.declared_parameters(chapter) == list(papermill.inspect_notebook(str(chapter)))


def test_smoke_parameters_are_declared_by_the_chapters():
    declared = set().union(*(book.declared_parameters(chapter) for chapter in CHAPTERS))
    assert set(book.SMOKE_PARAMETERS) <= declared  # a name no chapter declares would be silently dropped


def test_an_unreachable_source_falls_back_to_the_offline_photos_and_says_so(monkeypatch, capsys):
    monkeypatch.setattr(data, "shared_data_dir", lambda: None)  # no ../shared here
    train, val, used = book.load_split_or_offline("shared", 8, seed=3)
    assert used == "offline"
    assert (train, val) == data.load_split("offline", 8, seed=3)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and out[0].startswith("data='shared' is not available here, so this chapter uses "
                                               "data='offline': data='shared' needs ../shared/data/photos")


def test_assignments_outside_a_repository_are_one_error_line_naming_the_option(tmp_path, monkeypatch, capsys):
    from colorlab.cli import main

    monkeypatch.chdir(tmp_path)
    assert main(["assignments", "build", "-o", "course"]) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"colorlab assignments: error: no book here: {tmp_path.resolve()} is not inside")
    assert line.endswith("(--book DIR)")
    assert not (tmp_path / "course").exists()
