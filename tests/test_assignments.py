"""The assignments loop on a two-exercise demo notebook: build, hand out, fill in, grade.

Grading starts a Jupyter kernel (~2 s), so each kind of submission is graded once per module.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from colorlab.assignments import (
    build_assignments,
    graded_cells,
    graded_chapters,
    public_version,
    publish_exercises,
    solution_cell,
    student_version,
)
from colorlab.assignments import tests_cell as make_tests_cell  # not collected as a test
from colorlab.assignments_cli import add_cli
from colorlab.book import SMOKE_PARAMETERS
from colorlab.grading import grade, grading_notebook

DEMO = Path(__file__).parent / "fixtures" / "assignment_demo.ipynb"
POINTS = {"normalize-lab-tests": 2, "l1-term-tests": 3}
STUB = "# YOUR CODE HERE\n    raise NotImplementedError()"
L1_BY_TORCH = "return lam * torch.nn.functional.l1_loss(fake_ab, real_ab)"  # correct, unlike the teacher's text
COLAB = "colab.research.google.com"
L2_INSTEAD_OF_L1 = "return lam * torch.nn.functional.mse_loss(fake_ab, real_ab)"
NORMALIZE = "return lab[:, :1] / 50 - 1, lab[:, 1:] / 110"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def cell_by_id(nb: nbformat.NotebookNode, grade_id: str) -> nbformat.NotebookNode:
    return next(cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def marked_lines(nb: nbformat.NotebookNode, marker: str) -> list[str]:
    """The non-blank lines between ``### BEGIN <marker>`` and ``### END <marker>`` in the teacher's notebook."""
    lines, inside = [], False
    for cell in nb.cells:
        for line in cell.source.split("\n"):
            if f"BEGIN {marker}" in line or f"END {marker}" in line:
                inside = f"BEGIN {marker}" in line
            elif inside and line.strip():
                lines.append(line.strip())
    return lines


def cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="colorlab")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.fixture(scope="module")
def course(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("course")
    assert cli("assignments", "build", str(DEMO), "-o", str(out)) == 0
    return out


@pytest.fixture(scope="module")
def release(course) -> Path:
    return course / "release" / "assignment_demo" / "assignment_demo.ipynb"


def submit(release: Path, tmp_path: Path, answers: dict[str, str]) -> Path:
    """A student's copy of the release with `answers` written in place of the stubs."""
    nb = read(release)
    for grade_id, answer in answers.items():
        cell = cell_by_id(nb, grade_id)
        assert STUB in cell.source
        cell.source = cell.source.replace(STUB, answer)
    path = tmp_path / "assignment_demo.ipynb"
    nbformat.write(nb, path)
    return path


# --- authoring and building (no kernel) -------------------------------------------------------


def test_demo_cells_carry_nbgrader_metadata():
    nb = read(DEMO)
    assert {grade_id: cell.metadata.nbgrader.points for grade_id, cell in graded_cells(nb).items()} == POINTS
    common = {"schema_version": 3, "task": False}
    assert cell_by_id(nb, "l1-term").metadata.nbgrader == {
        "grade": False, "solution": True, "locked": False, "grade_id": "l1-term", **common
    }
    assert cell_by_id(nb, "l1-term-tests").metadata.nbgrader == {
        "grade": True, "solution": False, "locked": True, "grade_id": "l1-term-tests", "points": 3, **common
    }


def test_build_writes_nbgrader_source_and_release_layout(course):
    assert sorted(str(path.relative_to(course)) for path in course.rglob("*.ipynb")) == [
        "release/assignment_demo/assignment_demo.ipynb",
        "source/assignment_demo/assignment_demo.ipynb",
    ]
    assert (course / "source" / "assignment_demo" / "assignment_demo.ipynb").read_bytes() == DEMO.read_bytes()


def test_release_keeps_no_solution_and_no_hidden_test(release):
    text = release.read_text()
    assert "# YOUR CODE HERE" in text and "raise NotImplementedError()" in text
    for marker in ("BEGIN SOLUTION", "END SOLUTION", "BEGIN HIDDEN TESTS", "END HIDDEN TESTS"):
        assert marker not in text
    teacher = read(DEMO)
    solution_lines, hidden_lines = marked_lines(teacher, "SOLUTION"), marked_lines(teacher, "HIDDEN TESTS")
    assert len(solution_lines) == 4 and len(hidden_lines) == 7
    for line in solution_lines + hidden_lines:
        assert json.dumps(line)[1:-1] not in text, line  # as it would be written in the JSON file


def test_release_keeps_the_exercise_scaffold_and_locks_graded_cells(release):
    student, teacher = read(release), read(DEMO)
    assert len(student.cells) == len(teacher.cells)
    solution = cell_by_id(student, "normalize-lab")
    assert solution.source.startswith("def normalize(lab: torch.Tensor)") and solution.source.endswith(STUB)
    assert solution.metadata.deletable is False and "editable" not in solution.metadata
    tests = cell_by_id(student, "normalize-lab-tests")
    assert "assert L.shape ==" in tests.source  # visible tests stay visible
    assert tests.metadata.deletable is False and tests.metadata.editable is False
    assert all(cell.outputs == [] for cell in student.cells if cell.cell_type == "code")


def test_release_drops_the_badge_that_opens_the_teachers_notebook(release):
    assert COLAB in DEMO.read_text()  # the teacher's notebook has one
    text = release.read_text()
    assert COLAB not in text and "Open In Colab" not in text
    assert read(release).cells[0].source.startswith("# Assignment demo")


def test_badge_url_points_the_badge_at_the_students_copy(tmp_path):
    url = "https://colab.research.google.com/github/school/course/blob/main/release/{assignment}/{notebook}"
    assert cli("assignments", "build", str(DEMO), "-o", str(tmp_path), "--badge-url", url) == 0
    first = read(tmp_path / "release" / "assignment_demo" / "assignment_demo.ipynb").cells[0].source
    assert f"({url.format(assignment='assignment_demo', notebook='assignment_demo.ipynb')})" in first
    assert "colorlab-book/colorlab/blob/main/tests" not in first


def test_build_refuses_a_release_that_still_gives_an_answer_away(tmp_path):
    teacher = read(DEMO)
    hint = "Stuck? The answer is `return lam * (fake_ab - real_ab).abs().mean()`."  # prose quoting the solution
    teacher.cells.append(nbformat.v4.new_markdown_cell(hint))
    path = tmp_path / "leaky.ipynb"
    nbformat.write(teacher, path)
    with pytest.raises(ValueError, match="survive in the release.*return lam"):
        build_assignments([path], tmp_path / "course")
    assert not (tmp_path / "course" / "release" / "leaky" / "leaky.ipynb").exists()
    assert build_assignments([path], tmp_path / "unchecked", check=False)  # the teacher's choice, explicitly


def test_the_books_release_folder_holds_no_solution_hidden_test_or_teacher_badge(tmp_path):
    assert cli("assignments", "build", "-o", str(tmp_path)) == 0
    released = {path.name: path.read_text() for path in (tmp_path / "release").rglob("*") if path.is_file()}
    assert sorted(released) == sorted(chapter.name for chapter in graded_chapters())
    text = "\n".join(released.values())
    assert "BEGIN SOLUTION" not in text and "HIDDEN TESTS" not in text and COLAB not in text
    for chapter in graded_chapters():
        teacher = read(chapter)
        for line in marked_lines(teacher, "SOLUTION") + marked_lines(teacher, "HIDDEN TESTS"):
            assert json.dumps(line)[1:-1] not in released[chapter.name], (chapter.name, line)


@pytest.mark.parametrize("chapter", [DEMO, *graded_chapters()], ids=lambda path: path.stem)
def test_public_page_shows_the_exercise_folds_the_solution_and_drops_hidden_tests(chapter):
    teacher = read(chapter)
    for cell in graded_cells(teacher).values():  # as if executed: the hidden asserts printed
        cell.outputs = [nbformat.v4.new_output("stream", text="hidden check printed this\n")]
    page = public_version(teacher)
    nbformat.validate(page)
    text = nbformat.writes(page)
    assert "hidden check printed this" not in text
    for line in marked_lines(teacher, "HIDDEN TESTS"):
        assert json.dumps(line)[1:-1] not in text, line
    assert len({cell.id for cell in page.cells}) == len(page.cells)
    solutions = [i for i, cell in enumerate(page.cells) if cell.metadata.get("nbgrader", {}).get("solution")]
    assert len(solutions) == len(graded_cells(teacher))
    for index in solutions:
        visible, folded = page.cells[index], page.cells[index + 1]
        assert visible.source.rstrip().endswith("raise NotImplementedError()") and "SOLUTION" not in visible.source
        assert folded.metadata.tags == ["hide-input"] and folded.metadata.mystnb["code_prompt_show"] == "Show solution"
        original = cell_by_id(teacher, visible.metadata.nbgrader.grade_id).source
        kept = [line for line in original.split("\n") if "SOLUTION" not in line]
        assert folded.source.split("\n") == kept and "nbgrader" not in folded.metadata


def test_publish_rewrites_executed_chapters_in_place_and_leaves_the_others(tmp_path):
    demo, plain = tmp_path / DEMO.name, tmp_path / "plain.ipynb"
    demo.write_bytes(DEMO.read_bytes())
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1")]), plain)
    before = plain.read_bytes()
    publish_exercises([demo, plain])
    assert plain.read_bytes() == before
    assert "Show solution" in demo.read_text() and "BEGIN HIDDEN TESTS" not in demo.read_text()


@pytest.mark.slow
def test_rendered_page_and_its_download_show_the_exercise_fold_the_solution_and_hide_the_tests(tmp_path):
    """Jupyter Book renders the published demo (no execution needed: the book renders as is)."""
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "_config.yml").write_text("title: demo\nexecute:\n  execute_notebooks: 'off'\n")
    (tmp_path / "src" / "_toc.yml").write_text("format: jb-book\nroot: assignment_demo\n")
    page = tmp_path / "src" / DEMO.name
    page.write_bytes(DEMO.read_bytes())
    publish_exercises([page])
    command = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]
    subprocess.run([*command, "build", str(tmp_path / "src"), "--path-output", str(tmp_path)], check=True)
    html = (tmp_path / "_build" / "html" / "assignment_demo.html").read_text()
    download = (tmp_path / "_build" / "html" / "_sources" / DEMO.name).read_text()
    assert html.count("Show solution") == 2 and html.count("NotImplementedError") == 2
    assert "abs</span><span class=\"p\">()" in html  # the teacher's solution, folded but on the page
    teacher = read(DEMO)
    hidden = [line for line in marked_lines(teacher, "HIDDEN TESTS") if "=" in line or "assert" in line]
    for line in hidden:
        assert json.dumps(line)[1:-1] not in download, line
    for message in ("L is not L / 50 - 1", "not lambda * L1", "L = 100 is 1"):  # hidden asserts' messages
        assert message not in html and message not in download


def test_solution_cell_without_markers_is_replaced_whole():
    nb = nbformat.v4.new_notebook(cells=[solution_cell("answer = 42", "answer")])
    assert student_version(nb).cells[0].source == "# YOUR CODE HERE\nraise NotImplementedError()"


@pytest.mark.parametrize(
    ("cells", "message"),
    [
        ([nbformat.v4.new_code_cell("### BEGIN SOLUTION\nx = 1\n### END SOLUTION")], "not marked as a solution"),
        ([solution_cell("### BEGIN HIDDEN TESTS\nassert x\n### END HIDDEN TESTS", "x")], "not marked as a tests"),
        ([solution_cell("### BEGIN SOLUTION\nx = 1", "x")], "without 'END SOLUTION'"),
        ([make_tests_cell("assert x", "x", 1), make_tests_cell("assert y", "x", 1)], "its own grade_id"),
        ([make_tests_cell("assert x", "x", -1)], "points >= 0"),
    ],
)
def test_malformed_markers_are_rejected(cells, message):
    with pytest.raises(ValueError, match=message):
        student_version(nbformat.v4.new_notebook(cells=cells))


def test_grading_restores_the_teachers_tests_and_injects_declared_parameters(release):
    submission = read(release)
    cell_by_id(submission, "l1-term-tests").source = "pass  # the student 'fixed' the test"
    teacher = read(DEMO)
    graded = grading_notebook(submission, teacher, SMOKE_PARAMETERS)
    for grade_id in POINTS:
        assert cell_by_id(graded, grade_id).source == cell_by_id(teacher, grade_id).source
    assert cell_by_id(graded, "l1-term").source.endswith(STUB)  # the student's answer is graded as is
    parameters_at = next(i for i, cell in enumerate(graded.cells) if "parameters" in cell.metadata.get("tags", []))
    injected = graded.cells[parameters_at + 1]
    assert injected.metadata.tags == ["injected-parameters"]
    assert injected.source.splitlines()[1:] == ["size = 64", "seed = 0"]  # the demo declares no epochs etc.


# --- grading (one kernel per submission) ------------------------------------------------------


def scores(report) -> dict[str, float]:
    return {exercise.grade_id: exercise.points for exercise in report.exercises}


def test_teacher_version_scores_full_marks(tmp_path, capsys):
    report_path = tmp_path / "report.json"
    assert cli("assignments", "grade", str(DEMO), "--source", str(DEMO), "--json", str(report_path)) == 0
    table = capsys.readouterr().out
    assert "normalize-lab-tests" in table and "total" in table and "5/5" in table
    report = json.loads(report_path.read_text())
    assert (report["points"], report["max_points"]) == (5, 5)
    assert [(e["grade_id"], e["points"], e["reason"]) for e in report["exercises"]] == [
        ("normalize-lab-tests", 2, None),
        ("l1-term-tests", 3, None),
    ]


def test_student_version_scores_zero_without_stopping_the_grader(release):
    report = grade(release, DEMO)
    assert scores(report) == {"normalize-lab-tests": 0, "l1-term-tests": 0}
    assert (report.points, report.max_points) == (0, 5)
    assert all(exercise.reason == "NotImplementedError" for exercise in report.exercises)


def test_one_exercise_filled_in_scores_exactly_its_points(release, tmp_path):
    report = grade(submit(release, tmp_path, {"l1-term": L1_BY_TORCH}), DEMO)
    assert scores(report) == {"normalize-lab-tests": 0, "l1-term-tests": 3}
    assert report.points == 3


def test_l2_instead_of_l1_loses_the_exercise(release, tmp_path):
    report = grade(submit(release, tmp_path, {"normalize-lab": NORMALIZE, "l1-term": L2_INSTEAD_OF_L1}), DEMO)
    assert scores(report) == {"normalize-lab-tests": 2, "l1-term-tests": 0}
    assert report.exercises[1].reason == "AssertionError: not lambda * L1"  # caught by a hidden test
    assert "l1-term-tests" in report.format_table() and "AssertionError" in report.format_table()


@pytest.mark.parametrize(
    ("answer", "forbidden_kept", "points"),
    [
        ("return colorlab.color.normalize_lab(lab)", True, 0),  # the one-line cheat
        ("from colorlab.color import normalize_lab as scale\n    return scale(lab)", True, 0),  # an alias
        ("return colorlab.color.normalize_lab(lab)", False, 2),  # without the rule the cheat would pass
    ],
)
def test_calling_the_forbidden_function_scores_zero_with_the_reason(release, tmp_path, answer, forbidden_kept, points):
    teacher = read(DEMO)
    if not forbidden_kept:
        del cell_by_id(teacher, "normalize-lab").metadata["colorlab"]
    source = tmp_path / "source" / DEMO.name
    source.parent.mkdir()
    nbformat.write(teacher, source)
    report = grade(submit(release, tmp_path, {"normalize-lab": answer, "l1-term": L1_BY_TORCH}), source)
    assert scores(report) == {"normalize-lab-tests": points, "l1-term-tests": 3}
    if forbidden_kept:
        assert "colorlab.color.normalize_lab, which this exercise forbids" in report.exercises[0].reason


# --- the book's graded chapters ----------------------------------------------------------------


@pytest.mark.parametrize("chapter", graded_chapters(), ids=lambda path: path.stem)
def test_chapter_has_graded_exercises_and_a_clean_student_version(chapter):
    teacher = read(chapter)
    assert len(graded_cells(teacher)) >= 2
    text = nbformat.writes(student_version(teacher))
    for line in marked_lines(teacher, "SOLUTION") + marked_lines(teacher, "HIDDEN TESTS"):
        assert json.dumps(line)[1:-1] not in text, line


@pytest.mark.slow
@pytest.mark.book
@pytest.mark.parametrize("chapter", graded_chapters(), ids=lambda path: path.stem)
def test_chapter_teacher_version_scores_full_marks(chapter):
    report = grade(chapter, chapter)
    assert report.points == report.max_points, report.format_table()
