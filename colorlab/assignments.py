"""Chapters as classroom assignments: student versions and autograding, the nbgrader way.

A teacher notebook marks each exercise with two code cells carrying nbgrader's metadata
(``cell.metadata["nbgrader"]``, schema version 3):

* a *solution* cell (nbgrader's "Autograded answer"): the code between ``### BEGIN SOLUTION``
  and ``### END SOLUTION`` is what the student has to write;
* a *tests* cell (nbgrader's "Autograder tests") worth ``points``: visible asserts, plus hidden
  asserts between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` that check the
  student's code against independent references (closed forms, known values, numpy).

The solution cell may also list the names its solution must not use, in
``cell.metadata["colorlab"]["forbidden"]``, and the only names it may use in
``cell.metadata["colorlab"]["allowed"]`` (see `colorlab.integrity`).

`build_assignments` writes nbgrader's course layout (``source/<assignment>/`` for the teacher,
``release/<assignment>/`` for students) and checks that nothing of the answers reached the
release; `publish_exercises` turns an executed chapter into the book's public page;
`colorlab.grading` runs submissions with the teacher's tests restored. Same markers, metadata
and layout as nbgrader, so a school
that runs nbgrader can import the notebooks unchanged; we do not depend on nbgrader itself because
it brings a Jupyter server, JupyterLab and an SQL gradebook (about 100 packages) to do what
nbformat + jupyter_client do here in a few pages. nbformat (the ``book`` extra) is imported by the functions
that read or write notebooks, so that importing this module, as the ``colorlab`` command does to
build its parser, works on a plain ``pip install colorlab-book``.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .book import find_book

if TYPE_CHECKING:
    from nbformat import NotebookNode

# nbgrader's default delimiters (matched anywhere in a line, as nbgrader does) and Python stub.
SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_TESTS_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")

EXERCISE_TIMEOUT = 120  # grading: seconds for each cell a student wrote, and each solution or tests cell
SUBMISSION_TIMEOUT = 3600  # grading: seconds for a whole submission, every cell, rerun and call of the tests
MAX_OUTPUT_BYTES = 1_000_000  # grading: output kept per cell, so a print loop cannot fill the grader's memory


# --- authoring -------------------------------------------------------------------------------


def _nbgrader_metadata(grade_id: str, *, solution: bool, grade: bool, points: float | None = None) -> dict:
    metadata = dict(grade=grade, grade_id=grade_id, locked=grade, schema_version=3, solution=solution, task=False)
    if grade:
        metadata["points"] = points
    return metadata


def solution_cell(source: str, grade_id: str, forbidden: Iterable[str] = (),
                  allowed: Iterable[str] | None = None) -> NotebookNode:
    """A code cell the student completes (nbgrader's "Autograded answer"), which may not use `forbidden`
    and, with `allowed`, may use nothing else."""
    import nbformat

    metadata: dict[str, Any] = {"nbgrader": _nbgrader_metadata(grade_id, solution=True, grade=False)}
    if forbidden:
        metadata["colorlab"] = {"forbidden": list(forbidden)}
    if allowed is not None:
        metadata.setdefault("colorlab", {})["allowed"] = list(allowed)
    return nbformat.v4.new_code_cell(source, metadata=metadata)


def forbidden_names(cell: NotebookNode) -> list[str]:
    """The dotted names a solution cell declares off limits (``colorlab.evaluate.psnr``, ``skimage.metrics``)."""
    names = cell.get("metadata", {}).get("colorlab", {}).get("forbidden", [])
    if not isinstance(names, list) or not all(isinstance(name, str) and name for name in names):
        raise ValueError(f"{_nbgrader(cell).get('grade_id')}: colorlab.forbidden must be a list of dotted names")
    return names


def allowed_names(cell: NotebookNode) -> list[str] | None:
    """The dotted names a solution cell may use, if it declares a whitelist (``"allowed": ["torch", "math"]``)."""
    names = cell.get("metadata", {}).get("colorlab", {}).get("allowed")
    if names is not None and (not isinstance(names, list) or not all(isinstance(n, str) and n for n in names)):
        raise ValueError(f"{_nbgrader(cell).get('grade_id')}: colorlab.allowed must be a list of dotted names")
    return names


def tests_cell(source: str, grade_id: str, points: float) -> NotebookNode:
    """A locked code cell of asserts worth `points` (nbgrader's "Autograder tests")."""
    import nbformat

    return nbformat.v4.new_code_cell(
        source, metadata={"nbgrader": _nbgrader_metadata(grade_id, solution=False, grade=True, points=points)}
    )


def _nbgrader(cell: NotebookNode) -> dict:
    return cell.get("metadata", {}).get("nbgrader", {})


def _is_locked(cell: NotebookNode) -> bool:
    """Cells whose source the grader takes from the teacher's notebook, never from the student."""
    meta = _nbgrader(cell)
    return not meta.get("solution", False) and (meta.get("grade", False) or meta.get("locked", False))


def _replace_regions(source: str, markers: tuple[str, str], stub: Iterable[str]) -> tuple[str, bool]:
    """Replace each begin..end region, marker lines included, by `stub` indented like the begin line."""
    begin, end = markers
    lines: list[str] = []
    inside = found = False
    for line in source.split("\n"):
        if begin in line:
            if inside:
                raise ValueError(f"nested '{begin}'")
            inside = found = True
            indent = line[: len(line) - len(line.lstrip())]
            lines += [indent + stub_line for stub_line in stub]
        elif end in line:
            if not inside:
                raise ValueError(f"'{end}' without '{begin}'")
            inside = False
        elif not inside:
            lines.append(line)
    if inside:
        raise ValueError(f"'{begin}' without '{end}'")
    return "\n".join(lines), found


def graded_cells(nb: NotebookNode) -> dict[str, NotebookNode]:
    """The tests cells by grade_id, after checking that every marker and nbgrader cell is well formed.

    The checks are nbgrader's: unique grade ids, points on every tests cell, solution regions
    only in solution cells, hidden tests only in tests cells.
    """
    seen: set[str] = set()
    tests: dict[str, NotebookNode] = {}
    for index, cell in enumerate(nb.cells):
        meta = _nbgrader(cell)
        where = f"cell {index} ({meta.get('grade_id', 'no grade_id')})"
        try:
            _, has_solution = _replace_regions(cell.source, SOLUTION_MARKERS, CODE_STUB)
            _, has_hidden_tests = _replace_regions(cell.source, HIDDEN_TESTS_MARKERS, ())
        except ValueError as error:
            raise ValueError(f"{where}: {error}") from None
        if has_solution and not meta.get("solution"):
            raise ValueError(f"{where}: solution region in a cell not marked as a solution cell")
        if has_hidden_tests and not (meta.get("grade") and not meta.get("solution")):
            raise ValueError(f"{where}: hidden tests in a cell not marked as a tests cell")
        if not meta:
            continue
        grade_id = meta.get("grade_id")
        if not grade_id or grade_id in seen:
            raise ValueError(f"{where}: every nbgrader cell needs its own grade_id")
        seen.add(grade_id)
        if (meta.get("solution") or meta.get("grade")) and cell.cell_type != "code":
            raise ValueError(f"{where}: only code cells can be autograded")
        if meta.get("grade") and meta.get("solution"):
            raise ValueError(f"{where}: manually graded answers are not supported, split solution and tests")
        if meta.get("solution"):
            forbidden_names(cell), allowed_names(cell)  # raise for a malformed declaration
        if meta.get("grade"):
            if not isinstance(meta.get("points"), (int, float)) or meta["points"] < 0:
                raise ValueError(f"{where}: a tests cell needs points >= 0")
            tests[grade_id] = cell
    return tests


# --- building ---------------------------------------------------------------------------------


# Links that open a notebook somewhere it runs: in the teacher's notebook they open the teacher's copy.
LAUNCH_HOSTS = ("colab.research.google.com", "mybinder.org", "kaggle.com/kernels", "studiolab.sagemaker.aws")
_BADGE = re.compile(  # a Markdown image that is a link, or an HTML link
    r"\[!\[[^\]]*\]\([^)]*\)\]\((?P<url>[^)\s]+)\)|<a\s[^>]*href=\"(?P<href>[^\"]+)\"[^>]*>.*?</a>", re.S
)


def _launch_links(text: str) -> list[re.Match]:
    """Badges and HTML links in `text` that launch a notebook (Colab, Binder, ...)."""
    links = _BADGE.finditer(text)
    return [match for match in links if any(host in (match["url"] or match["href"]) for host in LAUNCH_HOSTS)]


def _rewrite_badges(text: str, badge_url: str | None) -> str:
    """Point each launch badge at `badge_url` (the student's copy), or remove it when there is none."""
    for match in reversed(_launch_links(text)):
        old = match["url"] or match["href"]
        replacement = match[0].replace(old, badge_url) if badge_url else ""
        text = text[: match.start()] + replacement + text[match.end() :]
    return text.lstrip("\n")


def _stub_solutions(cell: NotebookNode) -> str:
    """The cell's source with its solution regions replaced by the stub (the whole cell if unmarked)."""
    source, has_solution = _replace_regions(cell.source, SOLUTION_MARKERS, CODE_STUB)
    return source if has_solution or not _nbgrader(cell).get("solution") else "\n".join(CODE_STUB)


def student_version(nb: NotebookNode, badge_url: str | None = None) -> NotebookNode:
    """The notebook handed out: solutions stubbed, hidden tests, outputs and launch badges removed.

    Graded cells are locked; `badge_url` is where launch badges should point instead (the
    student's copy), or None to remove them.
    """
    graded_cells(nb)  # refuse malformed markers before handing anything out
    student = copy.deepcopy(nb)
    student.metadata.pop("celltoolbar", None)
    for cell in student.cells:
        meta = _nbgrader(cell)
        cell.source, _ = _replace_regions(_stub_solutions(cell), HIDDEN_TESTS_MARKERS, ())
        if cell.cell_type == "markdown":
            cell.source = _rewrite_badges(cell.source, badge_url)
        if cell.cell_type == "code":  # outputs may print what the solution computes
            cell.outputs, cell.execution_count = [], None
        if meta.get("solution"):
            cell.metadata["deletable"] = False
        elif _is_locked(cell):
            cell.metadata.update(deletable=False, editable=False)
    return student


def _marked_lines(nb: NotebookNode) -> list[str]:
    """Lines of the solutions and hidden tests that could give them away: those of no other code cell.

    A line that also appears in the chapter's own code (``import math``) is no secret; a line that
    the teacher's prose repeats is, and is kept.
    """
    inside, outside = set(), set()
    for cell in nb.cells:
        kept = _replace_regions(_replace_regions(cell.source, SOLUTION_MARKERS, ())[0], HIDDEN_TESTS_MARKERS, ())[0]
        if cell.cell_type == "code":
            outside |= {line.strip() for line in kept.split("\n")}
        inside |= {line.strip() for line in cell.source.split("\n")} - {line.strip() for line in kept.split("\n")}
    return sorted(line for line in inside - outside if any(char.isalnum() for char in line))


def release_leaks(teacher: NotebookNode, release_text: str) -> list[str]:
    """What of the teacher's answers `release_text` (a released file, as written) still contains.

    Solution and hidden-test lines (as JSON writes them) and the URLs of the teacher's launch badges.
    """
    lines = [line for line in _marked_lines(teacher) if json.dumps(line)[1:-1] in release_text]
    urls = {match["url"] or match["href"] for cell in teacher.cells for match in _launch_links(cell.source)}
    return lines + sorted(url for url in urls if url in release_text)


def build_assignments(
    notebooks: Iterable[str | Path], out_dir: str | Path, *, badge_url: str | None = None, check: bool = True
) -> list[Path]:
    """Write nbgrader's layout, one assignment per notebook: ``source/<stem>/`` and ``release/<stem>/``.

    `badge_url` may use ``{assignment}`` and ``{notebook}`` (the released file's folder and name).
    With `check`, a release that still contains a line of a solution or hidden test, or a badge
    to the teacher's notebook, is deleted and the build fails.
    """
    import nbformat

    written: list[Path] = []
    for path in map(Path, notebooks):
        nb = nbformat.read(path, as_version=4)
        if not graded_cells(nb):
            raise ValueError(f"{path}: no graded exercises (no cell with nbgrader grade metadata)")
        source = Path(out_dir) / "source" / path.stem / path.name
        release = Path(out_dir) / "release" / path.stem / path.name
        source.parent.mkdir(parents=True, exist_ok=True)
        release.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, source)
        url = badge_url.format(assignment=path.stem, notebook=path.name) if badge_url else None
        nbformat.write(student_version(nb, url), release)
        leaks = release_leaks(nb, release.read_text(encoding="utf-8")) if check else []
        if leaks:
            release.unlink()
            raise ValueError(f"{path}: {len(leaks)} line(s) of the answers survive in the release, e.g. {leaks[0]!r}")
        written += [source, release]
    return written


def public_version(executed: NotebookNode) -> NotebookNode:
    """An executed chapter as the public book shows it: the exercise as students get it, the
    teacher's solution folded in a "Show solution" cell under it, and no hidden test (source or output)."""
    import nbformat

    graded_cells(executed)
    page = copy.deepcopy(executed)
    cells = []
    for cell in page.cells:
        meta = _nbgrader(cell)
        source, has_hidden_tests = _replace_regions(cell.source, HIDDEN_TESTS_MARKERS, ())
        if has_hidden_tests:  # the hidden asserts may have printed
            cell.source, cell.outputs = source, []
        cells.append(cell)
        if meta.get("solution"):
            solution = nbformat.v4.new_code_cell(
                "\n".join(line for line in cell.source.split("\n") if not any(m in line for m in SOLUTION_MARKERS)),
                metadata={"tags": ["hide-input"],
                          "mystnb": {"code_prompt_show": "Show solution", "code_prompt_hide": "Hide solution"}},
            )
            solution.id = f"{cell.get('id', 'cell')}-solution"[:64]
            solution.outputs, solution.execution_count = cell.outputs, cell.execution_count
            cell.source, cell.outputs, cell.execution_count = _stub_solutions(cell), [], None
            cells.append(solution)
    page.cells = cells
    return page


def publish_exercises(notebooks: Iterable[Path]) -> None:
    """Rewrite executed chapters in place as `public_version` (the book build calls this before rendering)."""
    import nbformat

    for path in notebooks:
        nb = nbformat.read(path, as_version=4)
        if graded_cells(nb):
            nbformat.write(public_version(nb), path)


def book_notebooks(book_dir: str | Path | None = None) -> list[Path]:
    """The notebooks of `book_dir` (default: the book found by `colorlab.book.find_book`), without build
    outputs (``_build``, ``_executed``) or checkpoints."""
    book_dir = find_book(book_dir)
    return sorted(
        path
        for path in book_dir.rglob("*.ipynb")
        if not any(part.startswith(("_", ".")) for part in path.relative_to(book_dir).parts)
    )


def graded_chapters(book_dir: str | Path | None = None) -> list[Path]:
    """The book's notebooks that contain graded exercises: the default assignments."""
    import nbformat

    return [path for path in book_notebooks(book_dir) if graded_cells(nbformat.read(path, as_version=4))]
