"""Grading submissions against the teacher's notebook: one student, or a whole class into one CSV.

The grader reads the answer key once (and checks its sha256 after every submission), refuses
solutions that use the names an exercise forbids or leave its whitelist (`colorlab.integrity`),
and runs the notebook cell by cell in a sandboxed kernel (`colorlab.sandbox`) that holds the
released tests only. When the kernel reaches a tests cell, the teacher's tests cell, hidden tests
included, runs here, in the grader, calling the student's functions through a wire that returns
plain data (`colorlab.judge`). Whatever a submission does, every exercise gets points and a
one-line reason: a cell that runs past its time limit or kills the kernel is replaced by an error
and the notebook runs again from the start (a few times, within a budget per submission), so it
costs only the exercise it belongs to; a submission the grader cannot even read scores 0 with the
reason. book/teaching.md says what this guarantees and what it does not.
"""

from __future__ import annotations

import ast
import copy
import csv
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import nbformat
from nbformat import NotebookNode

from .assignments import (
    EXERCISE_TIMEOUT,
    MAX_OUTPUT_BYTES,
    SUBMISSION_TIMEOUT,
    _is_locked,
    _nbgrader,
    allowed_names,
    book_notebooks,
    forbidden_names,
    graded_cells,
    student_version,
)
from .book import SMOKE_PARAMETERS, declared_parameters
from .integrity import NameResolver, bindings, check_cell, python_source
from .judge import Wire, run_tests
from .sandbox import Limits, Sandbox

@dataclass(frozen=True)
class Exercise:
    """A tests cell and the solution cells it grades (those since the previous tests cell)."""

    grade_id: str
    points: float
    solutions: tuple[str, ...]
    forbidden: tuple[str, ...]
    allowed: tuple[str, ...] | None = None  # a whitelist, where the solution cells declare one


def exercises(source: NotebookNode) -> list[Exercise]:
    """The teacher's exercises in notebook order; the forbidden names are those of their solution cells."""
    tests = graded_cells(source)
    found: list[Exercise] = []
    solutions: list[str] = []
    forbidden: list[str] = []
    allowed: list[str] | None = None
    for cell in source.cells:
        meta = _nbgrader(cell)
        if meta.get("solution"):
            solutions.append(meta["grade_id"])
            forbidden += forbidden_names(cell)
            if allowed_names(cell) is not None:
                allowed = [*(allowed or []), *allowed_names(cell)]
        elif meta.get("grade_id") in tests:
            found.append(Exercise(meta["grade_id"], meta["points"], tuple(solutions), tuple(forbidden),
                                  None if allowed is None else tuple(allowed)))
            solutions, forbidden, allowed = [], [], None
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


def _parsed(source: str) -> ast.Module | None:
    try:
        return python_source(source)
    except (RecursionError, MemoryError):
        return None  # refused in the loop below, with its cell's label


def rule_breaches(nb: NotebookNode, source: NotebookNode, graded: list[Exercise]) -> dict[str, str]:
    """Exercise -> why it scores 0 for the code the student wrote (forbidden names, tampering).

    Student code is every solution cell, and every code cell that is not one of the teacher's:
    a helper cell added next to the solution could otherwise call what the solution may not.
    Forbidden names hold for all student code; an exercise's whitelist (``allowed``) for its
    own solution cells, which then may not call what the student's other cells define. A cell
    too deeply nested to read costs every exercise its points.
    """
    teacher_code = {cell.source for nb_ in (source, student_version(source)) for cell in nb_.cells
                    if cell.cell_type == "code"}  # the released tests cells are the teacher's too
    resolver = NameResolver()
    student = {index: _parsed(cell.source) for index, cell in enumerate(nb.cells)
               if cell.cell_type == "code" and (_nbgrader(cell).get("solution") or cell.source not in teacher_code)}
    breaches: dict[str, str] = {}
    for index, cell in enumerate(nb.cells):
        try:
            tree = python_source(cell.source) if cell.cell_type == "code" else None
            if tree is None:
                continue
            added = cell.source not in teacher_code
            if _nbgrader(cell).get("solution") or added:
                for exercise in graded:
                    own = _nbgrader(cell).get("grade_id") in exercise.solutions
                    foreign = {name.split(".")[0] for other, code in student.items() if other != index and code
                               for name, _ in bindings(code.body)}
                    problem = check_cell(tree, resolver, exercise.forbidden, exercise.allowed if own else None,
                                         foreign if own else ())
                    if problem and exercise.grade_id not in breaches:
                        breaches[exercise.grade_id] = f"{cell_label(nb, index)}: {problem}"
            resolver.learn(tree)
        except (RecursionError, MemoryError) as error:
            reason = f"{cell_label(nb, index)}: too deeply nested for the grader to check ({type(error).__name__})"
            breaches.update({exercise.grade_id: reason for exercise in graded if exercise.grade_id not in breaches})
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


MAX_RESTARTS = 3  # kernels started again after a hang or a crash, per submission


@dataclass
class _Run:
    """What running one submission produced: verdicts of the tests, incidents, cut outputs, budget notes."""

    verdicts: dict[str, str | None]
    incidents: dict[int, str]
    cut: set[int]
    stopped: str | None = None  # why the run ended before the last cell, if it did
    strays: int = 0  # processes that left the kernel's process group and were killed at the end


def judge_namespace(source: NotebookNode, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The tests' namespace in the grader: the answer key's imports and its parameters (smoke values)."""
    namespace: dict[str, Any] = {"__name__": "__colorlab_tests__"}
    for cell in source.cells:
        tree = python_source(cell.source) if cell.cell_type == "code" else None
        for node in tree.body if tree else []:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                try:
                    exec(compile(ast.Module(body=[node], type_ignores=[]), "<key>", "exec"), namespace)  # noqa: S102
                except ImportError:
                    continue
        if tree and "parameters" in cell.metadata.get("tags", []):
            exec(compile(tree, "<parameters>", "exec"), namespace)  # noqa: S102: the teacher's cell
    namespace.update({name: value for name, value in parameters.items() if name in declared_parameters(source)})
    return namespace


def solution_functions(source: NotebookNode) -> set[str]:
    """The functions the answer key's solution cells define: in the tests, they are the student's."""
    names: set[str] = set()
    for cell in source.cells:
        tree = python_source(cell.source) if _nbgrader(cell).get("solution") else None
        names |= {node.name for node in (tree.body if tree else []) if isinstance(node, ast.FunctionDef)}
    return names


def _execute(nb: NotebookNode, key: AnswerKey, sandbox: Sandbox, limits: list[int], deadline: float,
             max_output_bytes: int, parameters: Mapping[str, Any]) -> _Run:
    """Run `nb` in the sandbox cell by cell; judge each tests cell in the grader when the kernel reaches it.

    A cell that hangs or kills the kernel is replaced by an error and the notebook runs again from
    the start (at most MAX_RESTARTS times, and never past `deadline`). Exercises already judged
    keep their verdict.
    """
    tests = {index: _nbgrader(cell)["grade_id"] for index, cell in enumerate(nb.cells)
             if _nbgrader(cell).get("grade_id") in key.tests}
    run = _Run({}, {}, set())
    functions = solution_functions(key.notebook)
    for attempt in range(MAX_RESTARTS + 1):
        sandbox.start()
        namespace = judge_namespace(key.notebook, parameters)
        wire = None
        failure = None
        for index, cell in enumerate(nb.cells):
            if cell.cell_type != "code":
                continue
            limit = min(limits[index], deadline - time.monotonic())
            if limit <= 0:
                run.stopped = "the submission's time budget was spent"
                break
            code = f"raise RuntimeError({run.incidents[index]!r})" if index in run.incidents else cell.source
            outcome = sandbox.execute(code, limit, max_output_bytes=max_output_bytes)
            if outcome.output_bytes > max_output_bytes:
                run.cut.add(index)
            if outcome.status == "timeout" and limit < limits[index]:  # the submission's budget, not the cell's
                run.stopped = "the submission's time budget was spent"
                break
            if outcome.status in {"timeout", "dead"}:
                failure = (index, outcome.status)
                break
            grade_id = tests.get(index)
            if grade_id is None or grade_id in run.verdicts or index in run.incidents:
                continue
            cell_end = time.monotonic() + limit
            wire = wire or Wire(sandbox, lambda: max(0.1, cell_end - time.monotonic()))
            run.verdicts[grade_id] = run_tests(key.tests[grade_id].source, namespace, wire, functions)
            if wire.broken:
                failure = (index, wire.broken)
                break
        if failure is None or run.stopped:
            break
        index, status = failure
        run.incidents[index] = (f"ran past its time limit of {limits[index]} s" if status == "timeout"
                                else "killed the kernel (exit, crash or out of memory)")
        if attempt == MAX_RESTARTS:
            run.stopped = f"the kernel failed {MAX_RESTARTS + 1} times"
    run.strays = len(sandbox.stop())
    return run


def _score(exercise: Exercise, run: _Run) -> tuple[float, str | None]:
    """Full points if the teacher's tests passed in the grader, else none with the reason."""
    if exercise.grade_id not in run.verdicts:
        return 0, f"tests cell not run ({run.stopped})" if run.stopped else "tests cell not run"
    verdict = run.verdicts[exercise.grade_id]
    return (exercise.points, None) if verdict is None else (0, _one_line(verdict))


def teacher_notebook(name: str, book_dir: str | Path | None = None) -> Path:
    """The book's notebook called `name` (book: `colorlab.book.find_book`): the default answer key for a submission."""
    matches = [path for path in book_notebooks(book_dir) if path.name == name]
    if len(matches) != 1:
        raise FileNotFoundError(f"expected one notebook named {name} in the book, found {len(matches)}")
    return matches[0]


class AnswerKeyChanged(RuntimeError):
    """The answer key's file changed while a class was graded: the grader stops."""


class AnswerKey:
    """The teacher's notebook, read once: its bytes' sha256, the notebook, its exercises and tests cells."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        data = self.path.read_bytes()
        self.sha256 = hashlib.sha256(data).hexdigest()
        self.notebook = nbformat.reads(data.decode("utf-8"), as_version=4)
        self.tests = graded_cells(self.notebook)
        self.exercises = exercises(self.notebook)
        self.released = student_version(self.notebook)  # tests cells as students see them: no hidden tests

    def verify(self) -> None:
        """Raise AnswerKeyChanged unless the file on disk still has the sha256 read at the start."""
        try:
            now = hashlib.sha256(self.path.read_bytes()).hexdigest()
        except OSError as error:
            now = f"unreadable ({_one_line(error)})"
        if now != self.sha256:
            raise AnswerKeyChanged(f"the answer key {self.path} changed during grading (sha256 {self.sha256[:12]}... "
                                   f"is now {now[:12]}...): grades stopped; restore it and grade again")


def grade(
    submission_path: str | Path,
    source_path: str | Path | AnswerKey | None = None,
    *,
    timeout: int = 600,
    exercise_timeout: int = EXERCISE_TIMEOUT,
    submission_timeout: int = SUBMISSION_TIMEOUT,
    max_output_bytes: int = MAX_OUTPUT_BYTES,
    parameters: Mapping[str, Any] = SMOKE_PARAMETERS,
    book_dir: str | Path | None = None,
    limits: Limits = Limits(),
    hidden: tuple[str | Path, ...] = (),
) -> GradeReport:
    """Run a student's notebook in a sandbox (`colorlab.sandbox`) and judge every exercise in the grader.

    The teacher's own cells may take `timeout` seconds each (the chapter trains a model); cells
    the student wrote, solution and tests cells get `exercise_timeout`; the whole submission gets
    `submission_timeout`. The kernel runs in a fresh folder that holds only the submission, with
    the released (visible) tests; the hidden tests run in this process (`colorlab.judge`). Files
    in `hidden` (the answer key and the submission are always among them) are out of the kernel's
    reach where the machine allows it. Raises only for a bad answer key; anything wrong with the
    submission becomes a reason in the report. Without `source_path`, the answer key is the
    notebook of the same name in the book (`book_dir`).
    """
    submission_path = Path(submission_path)
    key = source_path if isinstance(source_path, AnswerKey) else AnswerKey(
        Path(source_path) if source_path else teacher_notebook(submission_path.name, book_dir))
    source, graded = key.notebook, key.exercises

    def report(scores: list[ExerciseScore]) -> GradeReport:
        return GradeReport(str(submission_path), str(key.path), scores)

    try:
        submission = nbformat.read(submission_path, as_version=4)
        nb = grading_notebook(submission, key.released, parameters)
    except (OSError, ValueError, KeyError, AttributeError, TypeError, RecursionError) as error:  # not a notebook
        reason = f"cannot read the notebook: {_one_line(error) or type(error).__name__}"
        return report([ExerciseScore(exercise.grade_id, 0, exercise.points, reason) for exercise in graded])
    zeroed = {**rule_breaches(nb, source, graded), **_missing_cells(submission, graded)}
    teacher_code = {cell.source for cell in source.cells if cell.cell_type == "code" and not _nbgrader(cell)}
    limits_s = [timeout if cell.source in teacher_code else exercise_timeout for cell in nb.cells]
    deadline = time.monotonic() + submission_timeout
    with Sandbox(submission_path.name, nbformat.writes(nb), limits=limits,
                 hidden=(key.path, submission_path, *hidden)) as sandbox:
        run = _execute(nb, key, sandbox, limits_s, deadline, max_output_bytes, parameters)
    owners = _owners(nb, graded)
    edited = _edited_tests(submission, source)
    scores = []
    for exercise in graded:
        incident = next((f"{cell_label(nb, index)} {what}" for index, what in run.incidents.items()
                         if owners.get(index) == exercise.grade_id), None)
        if exercise.grade_id in zeroed or incident:
            points, reason = 0, zeroed.get(exercise.grade_id, incident)
        else:
            points, reason = _score(exercise, run)
        notes = [f"output of {cell_label(nb, index)} cut at {max_output_bytes} bytes"
                 for index in sorted(run.cut) if owners.get(index) == exercise.grade_id]
        notes += ["visible tests edited, graded with the teacher's"] if exercise.grade_id in edited else []
        notes += [f"{run.strays} process(es) left behind by the notebook were killed"] if run.strays else []
        reason = "; ".join(filter(None, [reason, *notes])) or None
        scores.append(ExerciseScore(exercise.grade_id, points, exercise.points, reason))
    return report(scores)


CSV_COLUMNS = ("student", "assignment", "exercise", "points", "max_points", "reason")


def grade_folder(
    folder: str | Path, csv_path: str | Path, source_path: str | Path | None = None, **options: Any
) -> list[GradeReport]:
    """Grade every notebook under `folder` into one CSV, one row per student and exercise.

    The student is the first folder below `folder` (nbgrader's ``submitted/<student>/...``), or the
    file's stem for notebooks directly in it. Rows are written as each submission finishes, so an
    interrupted run keeps what it graded; a submission the grader fails on gets a row with the
    reason and the class goes on. Each answer key is read once, and checked against its sha256
    after every submission: if it changed, grading stops with `AnswerKeyChanged`. The answer
    keys, the CSV and every submission are out of each kernel's reach (`colorlab.sandbox`).
    """
    folder = Path(folder)
    notebooks = sorted(
        path for path in folder.rglob("*.ipynb")
        if not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )
    if not notebooks:
        raise FileNotFoundError(f"no .ipynb submissions under {folder}")
    keys: dict[Path, AnswerKey] = {}

    def key_for(path: Path) -> AnswerKey:
        source = Path(source_path) if source_path else teacher_notebook(path.name, options.get("book_dir"))
        if source.resolve() not in keys:
            keys[source.resolve()] = AnswerKey(source)
        return keys[source.resolve()]

    hidden = (*notebooks, Path(csv_path))
    reports = []
    with open(csv_path, "w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(CSV_COLUMNS)
        for path in notebooks:
            relative = path.relative_to(folder)
            student = relative.parts[0] if len(relative.parts) > 1 else path.stem
            try:
                report = grade(path, key_for(path), hidden=hidden, **options)
            except Exception as error:  # noqa: BLE001: one broken submission must not stop the class
                writer.writerow([student, path.stem, "", 0, "", f"not graded: {_one_line(error)}"])
            else:
                reports.append(report)
                for exercise in report.exercises:
                    row = [student, Path(report.source).stem, exercise.grade_id, exercise.points, exercise.max_points]
                    writer.writerow([*row, exercise.reason or ""])
            file.flush()
            for key in keys.values():
                key.verify()
    return reports
