"""Grading submissions against the teacher's notebook: one student, or a whole class into one CSV.

The grader puts the teacher's tests cells back (with their hidden tests), refuses solutions that
use the names an exercise forbids (`colorlab.integrity`), and runs the notebook in a fresh Jupyter
kernel one cell at a time. Whatever a submission does, every exercise gets points and a one-line
reason: a cell that runs past its time limit or kills the kernel is replaced by an error and the
notebook is run again from the start, so it costs only the exercise it belongs to; output beyond
a budget per cell is dropped; a submission the grader cannot even read scores 0 with the reason.
This executes student code: grade in a container or an account with nothing to lose.
"""

from __future__ import annotations

import copy
import csv
import json
import subprocess
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import NotebookNode

from .assignments import (
    EXERCISE_TIMEOUT,
    MAX_OUTPUT_BYTES,
    _is_locked,
    _nbgrader,
    book_notebooks,
    forbidden_names,
    graded_cells,
    student_version,
)
from .book import SMOKE_PARAMETERS, declared_parameters
from .integrity import NameResolver, check_cell, python_source

@dataclass(frozen=True)
class Exercise:
    """A tests cell and the solution cells it grades (those since the previous tests cell)."""

    grade_id: str
    points: float
    solutions: tuple[str, ...]
    forbidden: tuple[str, ...]


def exercises(source: NotebookNode) -> list[Exercise]:
    """The teacher's exercises in notebook order; the forbidden names are those of their solution cells."""
    tests = graded_cells(source)
    found: list[Exercise] = []
    solutions: list[str] = []
    forbidden: list[str] = []
    for cell in source.cells:
        meta = _nbgrader(cell)
        if meta.get("solution"):
            solutions.append(meta["grade_id"])
            forbidden += forbidden_names(cell)
        elif meta.get("grade_id") in tests:
            found.append(Exercise(meta["grade_id"], meta["points"], tuple(solutions), tuple(forbidden)))
            solutions, forbidden = [], []
    return found


@dataclass(frozen=True)
class ExerciseScore:
    grade_id: str
    points: float
    max_points: float
    reason: str | None = None


@dataclass(frozen=True)
class GradeReport:
    submission: str
    source: str
    exercises: list[ExerciseScore]

    @property
    def points(self) -> float:
        return sum(exercise.points for exercise in self.exercises)

    @property
    def max_points(self) -> float:
        return sum(exercise.max_points for exercise in self.exercises)

    def to_json(self) -> str:
        return json.dumps({**asdict(self), "points": self.points, "max_points": self.max_points}, indent=2)

    def format_table(self) -> str:
        """One line per exercise with its reason (why it lost its points, or a note)."""
        width = max([len("exercise")] + [len(exercise.grade_id) for exercise in self.exercises])
        lines = [f"{'exercise':<{width}}  {'points':>9}  reason", "-" * (width + 19)]
        for exercise in self.exercises:
            points = _fraction(exercise.points, exercise.max_points)
            lines.append(f"{exercise.grade_id:<{width}}  {points}  {exercise.reason or ''}")
        lines += ["-" * (width + 19), f"{'total':<{width}}  {_fraction(self.points, self.max_points)}"]
        return "\n".join(line.rstrip() for line in lines)


def _fraction(points: float, max_points: float) -> str:
    return f"{points:>4g}/{max_points:<4g}"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def grading_notebook(
    submission: NotebookNode, source: NotebookNode, parameters: Mapping[str, Any] = SMOKE_PARAMETERS
) -> NotebookNode:
    """What the grader executes: the submission with the teacher's locked cells put back.

    Tests cells (and read-only cells) are matched by grade_id and restored from the teacher's
    notebook, which brings back the hidden tests and undoes any edit of the visible ones. Smoke
    parameters go into a cell tagged ``injected-parameters`` after the ``parameters`` cell.
    """
    teacher = {_nbgrader(cell)["grade_id"]: cell for cell in source.cells if _is_locked(cell)}
    nb = copy.deepcopy(submission)
    for index, cell in enumerate(nb.cells):
        original = teacher.get(_nbgrader(cell).get("grade_id"))
        if original is not None:
            nb.cells[index] = copy.deepcopy(original)
    declared = declared_parameters(nb)
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            overrides = [f"{name} = {value!r}" for name, value in parameters.items() if name in declared]
            if overrides:
                source_text = "\n".join(["# Smoke parameters injected by colorlab's grader", *overrides])
                injected = nbformat.v4.new_code_cell(source_text, metadata={"tags": ["injected-parameters"]})
                nb.cells.insert(index + 1, injected)
            break
    return nb


def cell_label(nb: NotebookNode, index: int) -> str:
    """How a report names a cell: its grade_id, or its number in the submission (as the student sees it)."""
    grade_id = _nbgrader(nb.cells[index]).get("grade_id")
    if grade_id:
        return f"cell {grade_id}"
    injected = sum("injected-parameters" in cell.metadata.get("tags", []) for cell in nb.cells[:index])
    return f"cell {index + 1 - injected}"


def _owners(nb: NotebookNode, graded: list[Exercise]) -> dict[int, str]:
    """Cell index -> the exercise whose tests cell comes next: what a failing cell costs."""
    tests = {exercise.grade_id for exercise in graded}
    owners: dict[int, str] = {}
    pending: list[int] = []
    for index, cell in enumerate(nb.cells):
        pending.append(index)
        if _nbgrader(cell).get("grade_id") in tests:
            owners.update(dict.fromkeys(pending, _nbgrader(cell)["grade_id"]))
            pending = []
    return owners


def rule_breaches(nb: NotebookNode, source: NotebookNode, graded: list[Exercise]) -> dict[str, str]:
    """Exercise -> why it scores 0 for the code the student wrote (forbidden names, tampering).

    Student code is every solution cell, and every code cell that is not one of the teacher's:
    a helper cell added next to the solution could otherwise call what the solution may not.
    """
    teacher_code = {cell.source for cell in source.cells if cell.cell_type == "code"}
    resolver = NameResolver()
    breaches: dict[str, str] = {}
    for index, cell in enumerate(nb.cells):
        tree = python_source(cell.source) if cell.cell_type == "code" else None
        if tree is None:
            continue
        if _nbgrader(cell).get("solution") or cell.source not in teacher_code:
            for exercise in graded:
                problem = check_cell(tree, resolver, exercise.forbidden)
                if problem and exercise.grade_id not in breaches:
                    breaches[exercise.grade_id] = f"{cell_label(nb, index)}: {problem}"
        resolver.learn(tree)
    return breaches


def _missing_cells(submission: NotebookNode, graded: list[Exercise]) -> dict[str, str]:
    """Exercise -> which of its graded cells the submission lost (deleted, or grade_id changed)."""
    present = {_nbgrader(cell).get("grade_id") for cell in submission.cells}
    missing = {}
    for exercise in graded:
        lost = [grade_id for grade_id in (*exercise.solutions, exercise.grade_id) if grade_id not in present]
        if lost:
            missing[exercise.grade_id] = f"graded cell {', '.join(lost)} missing (deleted, or its grade_id changed)"
    return missing


def _edited_tests(submission: NotebookNode, source: NotebookNode) -> set[str]:
    """Tests cells whose visible part the student changed (graded with the teacher's anyway)."""
    versions: dict[str, set[str]] = {}
    for nb in (source, student_version(source)):
        for cell in nb.cells:
            versions.setdefault(_nbgrader(cell).get("grade_id"), set()).add(cell.source)
    return {
        _nbgrader(cell)["grade_id"]
        for cell in submission.cells
        if _is_locked(cell) and cell.source not in versions.get(_nbgrader(cell)["grade_id"], {cell.source})
    }


class _BoundedClient(NotebookClient):
    """An nbclient that keeps at most `max_output_bytes` of output per cell and counts the rest."""

    def __init__(self, nb: NotebookNode, max_output_bytes: int, **kwargs: Any) -> None:
        super().__init__(nb, **kwargs)
        self.max_output_bytes = max_output_bytes
        self.output_bytes: Counter[int] = Counter()

    def output(self, outs, msg, display_id, cell_index):  # noqa: ANN001, ANN201 (nbclient's signature)
        if msg["msg_type"] in {"stream", "display_data", "execute_result", "update_display_data"}:
            self.output_bytes[cell_index] += len(json.dumps(msg["content"]))
            if self.output_bytes[cell_index] > self.max_output_bytes:
                return None
        return super().output(outs, msg, display_id, cell_index)


def _execute(
    nb: NotebookNode, cwd: Path, limits: list[int], max_output_bytes: int
) -> tuple[NotebookNode, dict[int, str], set[int]]:
    """Run `nb` cell by cell; rerun from the start without any cell that hung or killed the kernel.

    Returns the executed copy, the cells replaced (index -> what the cell did) and the cells
    whose output was cut.
    """
    incidents: dict[int, str] = {}
    while True:
        run = copy.deepcopy(nb)
        for index, what in incidents.items():
            run.cells[index].source = f"raise RuntimeError({what!r})"
        limit_of = {id(cell): limit for cell, limit in zip(run.cells, limits)}
        client = _BoundedClient(
            run,
            max_output_bytes,
            timeout_func=lambda cell: limit_of[id(cell)],
            kernel_name="python3",
            allow_errors=True,
            resources={"metadata": {"path": str(cwd)}},
        )
        failure = None
        with client.setup_kernel(stderr=subprocess.DEVNULL):  # the kernel's own noise as it is killed
            for index, cell in enumerate(run.cells):
                if cell.cell_type != "code":
                    continue
                try:
                    client.execute_cell(cell, index)
                except DeadKernelError:
                    failure = (index, "killed the kernel (exit, crash or out of memory)")
                except CellTimeoutError:
                    failure = (index, f"ran past its time limit of {limits[index]} s")
                if failure:
                    break
        if failure is None:
            cut = {index for index, size in client.output_bytes.items() if size > max_output_bytes}
            return run, incidents, cut
        incidents[failure[0]] = failure[1]


def _score(exercise: Exercise, cell: NotebookNode | None) -> tuple[float, str | None]:
    """Full points if the tests cell ran without an error, else none (nbgrader's rule for code cells)."""
    if cell is None or cell.execution_count is None:
        return 0, "tests cell not run"
    errors = [out for out in cell.outputs if out.output_type == "error"]
    if errors:
        return 0, _one_line(f"{errors[0].ename}: {errors[0].evalue}".rstrip(": "))
    return exercise.points, None


def teacher_notebook(name: str, book_dir: str | Path | None = None) -> Path:
    """The book's notebook called `name` (book: `colorlab.book.find_book`): the default answer key for a submission."""
    matches = [path for path in book_notebooks(book_dir) if path.name == name]
    if len(matches) != 1:
        raise FileNotFoundError(f"expected one notebook named {name} in the book, found {len(matches)}")
    return matches[0]


def grade(
    submission_path: str | Path,
    source_path: str | Path | None = None,
    *,
    timeout: int = 600,
    exercise_timeout: int = EXERCISE_TIMEOUT,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
    parameters: Mapping[str, Any] = SMOKE_PARAMETERS,
    book_dir: str | Path | None = None,
) -> GradeReport:
    """Run a student's notebook against the teacher's tests and score every exercise.

    The teacher's own cells may take `timeout` seconds each (the chapter trains a model); cells
    the student wrote, solution and tests cells get `exercise_timeout`. The kernel starts in the
    teacher notebook's folder, so relative paths resolve as in the book. Raises only for a bad
    answer key; anything wrong with the submission becomes a reason in the report. Without
    `source_path`, the answer key is the notebook of the same name in the book (`book_dir`).
    """
    submission_path = Path(submission_path)
    source_path = Path(source_path) if source_path else teacher_notebook(submission_path.name, book_dir)
    source = nbformat.read(source_path, as_version=4)
    graded = exercises(source)
    try:
        submission = nbformat.read(submission_path, as_version=4)
        nb = grading_notebook(submission, source, parameters)
    except (OSError, ValueError, KeyError, AttributeError, TypeError) as error:  # not JSON, not a notebook
        reason = f"cannot read the notebook: {_one_line(error)}"
        return GradeReport(str(submission_path), str(source_path), [
            ExerciseScore(exercise.grade_id, 0, exercise.points, reason) for exercise in graded
        ])
    zeroed = {**rule_breaches(nb, source, graded), **_missing_cells(submission, graded)}
    teacher_code = {cell.source for cell in source.cells if cell.cell_type == "code" and not _nbgrader(cell)}
    limits = [timeout if cell.source in teacher_code else exercise_timeout for cell in nb.cells]
    executed, incidents, cut = _execute(nb, source_path.parent, limits, max_output_bytes)
    owners = _owners(nb, graded)
    edited = _edited_tests(submission, source)
    tests_cells = {_nbgrader(cell).get("grade_id"): cell for cell in executed.cells}
    scores = []
    for exercise in graded:
        incident = next((f"{cell_label(nb, index)} {what}" for index, what in incidents.items()
                         if owners.get(index) == exercise.grade_id), None)
        if exercise.grade_id in zeroed or incident:
            points, reason = 0, zeroed.get(exercise.grade_id, incident)
        else:
            points, reason = _score(exercise, tests_cells.get(exercise.grade_id))
        notes = [f"output of {cell_label(nb, index)} cut at {max_output_bytes} bytes"
                 for index in sorted(cut) if owners.get(index) == exercise.grade_id]
        notes += ["visible tests edited, graded with the teacher's"] if exercise.grade_id in edited else []
        reason = "; ".join(filter(None, [reason, *notes])) or None
        scores.append(ExerciseScore(exercise.grade_id, points, exercise.points, reason))
    return GradeReport(str(submission_path), str(source_path), scores)


CSV_COLUMNS = ("student", "assignment", "exercise", "points", "max_points", "reason")


def grade_folder(
    folder: str | Path, csv_path: str | Path, source_path: str | Path | None = None, **options: Any
) -> list[GradeReport]:
    """Grade every notebook under `folder` into one CSV, one row per student and exercise.

    The student is the first folder below `folder` (nbgrader's ``submitted/<student>/...``), or the
    file's stem for notebooks directly in it. Rows are written as each submission finishes, so an
    interrupted run keeps what it graded; a submission the grader fails on gets a row with the
    reason and the class goes on.
    """
    folder = Path(folder)
    notebooks = sorted(
        path for path in folder.rglob("*.ipynb")
        if not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not notebooks:
        raise FileNotFoundError(f"no .ipynb submissions under {folder}")
    reports = []
    with open(csv_path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for path in notebooks:
            relative = path.relative_to(folder)
            student = relative.parts[0] if len(relative.parts) > 1 else path.stem
            try:
                report = grade(path, source_path, **options)
            except Exception as error:  # noqa: BLE001: one broken submission must not stop the class
                writer.writerow([student, path.stem, "", 0, "", f"not graded: {_one_line(error)}"])
                continue
            reports.append(report)
            for exercise in report.exercises:
                row = [student, Path(report.source).stem, exercise.grade_id, exercise.points, exercise.max_points]
                writer.writerow([*row, exercise.reason or ""])
            file.flush()
    return reports
