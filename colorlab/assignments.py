"""Chapters as classroom assignments: student versions and autograding, the nbgrader way.

A teacher notebook marks each exercise with two code cells carrying nbgrader's metadata
(``cell.metadata["nbgrader"]``, schema version 3):

* a *solution* cell (nbgrader's "Autograded answer"): the code between ``### BEGIN SOLUTION``
  and ``### END SOLUTION`` is what the student has to write;
* a *tests* cell (nbgrader's "Autograder tests") worth ``points``: visible asserts, plus hidden
  asserts between ``### BEGIN HIDDEN TESTS`` and ``### END HIDDEN TESTS`` that compare the
  student's code with colorlab's own implementation.

`build_assignments` writes nbgrader's course layout (``source/<assignment>/`` for the teacher,
``release/<assignment>/`` for students), `grade` runs a submission with the teacher's tests
restored and scores each tests cell. Same markers, metadata and layout as nbgrader, so a school
that runs nbgrader can import the notebooks unchanged; we do not depend on nbgrader itself because
it brings a Jupyter server, JupyterLab and an SQL gradebook (about 100 packages) to do what
nbformat + nbclient do here in a page.
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import shutil
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

BOOK_DIR = Path(__file__).resolve().parent.parent / "book"

# nbgrader's default delimiters (matched anywhere in a line, as nbgrader does) and Python stub.
SOLUTION_MARKERS = ("BEGIN SOLUTION", "END SOLUTION")
HIDDEN_TESTS_MARKERS = ("BEGIN HIDDEN TESTS", "END HIDDEN TESTS")
CODE_STUB = ("# YOUR CODE HERE", "raise NotImplementedError()")

# Grading runs every chapter on the CPU in seconds; only names a notebook's `parameters` cell
# declares are overridden (papermill's convention).
SMOKE_PARAMETERS: dict[str, Any] = {
    "size": 64,
    "epochs": 1,
    "pretrain_epochs": 1,
    "n_images": 16,
    "batch_size": 8,
    "device": "cpu",
    "data": "offline",
    "seed": 0,
    "smoke": True,
}


# --- authoring -------------------------------------------------------------------------------


def _nbgrader_metadata(grade_id: str, *, solution: bool, grade: bool, points: float | None = None) -> dict:
    metadata = dict(grade=grade, grade_id=grade_id, locked=grade, schema_version=3, solution=solution, task=False)
    if grade:
        metadata["points"] = points
    return metadata


def solution_cell(source: str, grade_id: str) -> NotebookNode:
    """A code cell the student completes (nbgrader's "Autograded answer")."""
    return nbformat.v4.new_code_cell(
        source, metadata={"nbgrader": _nbgrader_metadata(grade_id, solution=True, grade=False)}
    )


def tests_cell(source: str, grade_id: str, points: float) -> NotebookNode:
    """A locked code cell of asserts worth `points` (nbgrader's "Autograder tests")."""
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
        if meta.get("grade"):
            if not isinstance(meta.get("points"), (int, float)) or meta["points"] < 0:
                raise ValueError(f"{where}: a tests cell needs points >= 0")
            tests[grade_id] = cell
    return tests


# --- building ---------------------------------------------------------------------------------


def student_version(nb: NotebookNode) -> NotebookNode:
    """The notebook handed out: solutions stubbed, hidden tests and outputs removed, graded cells locked."""
    graded_cells(nb)  # refuse malformed markers before handing anything out
    student = copy.deepcopy(nb)
    student.metadata.pop("celltoolbar", None)
    for cell in student.cells:
        meta = _nbgrader(cell)
        source, has_solution = _replace_regions(cell.source, SOLUTION_MARKERS, CODE_STUB)
        if meta.get("solution") and not has_solution:
            source = "\n".join(CODE_STUB)
        cell.source, _ = _replace_regions(source, HIDDEN_TESTS_MARKERS, ())
        if cell.cell_type == "code":  # outputs may print what the solution computes
            cell.outputs, cell.execution_count = [], None
        if meta.get("solution"):
            cell.metadata["deletable"] = False
        elif _is_locked(cell):
            cell.metadata.update(deletable=False, editable=False)
    return student


def build_assignments(notebooks: Iterable[str | Path], out_dir: str | Path) -> list[Path]:
    """Write nbgrader's layout, one assignment per notebook: ``source/<stem>/`` and ``release/<stem>/``."""
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
        nbformat.write(student_version(nb), release)
        written += [source, release]
    return written


def book_notebooks(book_dir: Path = BOOK_DIR) -> list[Path]:
    """The book's notebooks, without build outputs (``_build``, ``_executed``) or checkpoints."""
    return sorted(
        path
        for path in book_dir.rglob("*.ipynb")
        if not any(part.startswith(("_", ".")) for part in path.relative_to(book_dir).parts)
    )


def graded_chapters(book_dir: Path = BOOK_DIR) -> list[Path]:
    """The book's notebooks that contain graded exercises: the default assignments."""
    return [path for path in book_notebooks(book_dir) if graded_cells(nbformat.read(path, as_version=4))]


# --- grading ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExerciseScore:
    grade_id: str
    points: float
    max_points: float
    error: str | None = None


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
        """One line per exercise, the error (first line) for those that lost their points."""
        width = max([len("exercise")] + [len(exercise.grade_id) for exercise in self.exercises])
        lines = [f"{'exercise':<{width}}  {'points':>9}  error", "-" * (width + 18)]
        for exercise in self.exercises:
            error = (exercise.error or "").split("\n")[0]
            lines.append(f"{exercise.grade_id:<{width}}  {_fraction(exercise.points, exercise.max_points)}  {error}")
        lines += ["-" * (width + 18), f"{'total':<{width}}  {_fraction(self.points, self.max_points)}"]
        return "\n".join(line.rstrip() for line in lines)


def _fraction(points: float, max_points: float) -> str:
    return f"{points:>4g}/{max_points:<4g}"


def _declared_names(source: str) -> set[str]:
    """Names assigned at the top level of a `parameters` cell (``size = 256``, ``seed: int = 0``)."""
    targets = []
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign):
            targets += node.targets
        elif isinstance(node, ast.AnnAssign):
            targets.append(node.target)
    return {name.id for target in targets for name in ast.walk(target) if isinstance(name, ast.Name)}


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
    for index, cell in enumerate(nb.cells):
        if "parameters" in cell.metadata.get("tags", []):
            declared = _declared_names(cell.source)
            overrides = [f"{name} = {value!r}" for name, value in parameters.items() if name in declared]
            if overrides:
                source = "\n".join(["# Smoke parameters injected by colorlab's grader", *overrides])
                injected = nbformat.v4.new_code_cell(source, metadata={"tags": ["injected-parameters"]})
                nb.cells.insert(index + 1, injected)
            break
    return nb


def _score(grade_id: str, max_points: float, cell: NotebookNode | None, kernel_death: str | None) -> ExerciseScore:
    """Full points if the tests cell ran without an error, else none (nbgrader's rule for code cells)."""
    if cell is None:
        error = "tests cell missing from the submission"
    elif cell.execution_count is None:
        error = kernel_death or "not run"
    else:
        errors = [out for out in cell.outputs if out.output_type == "error"]
        error = f"{errors[0].ename}: {errors[0].evalue}".rstrip(": ") if errors else None
    return ExerciseScore(grade_id, 0 if error else max_points, max_points, error)


def teacher_notebook(name: str, book_dir: Path = BOOK_DIR) -> Path:
    """The book's notebook called `name`: the default answer key for a submission of that name."""
    matches = [path for path in book_notebooks(book_dir) if path.name == name]
    if len(matches) != 1:
        raise FileNotFoundError(f"expected one notebook named {name} under {book_dir}, found {len(matches)}")
    return matches[0]


def grade(
    submission_path: str | Path,
    source_path: str | Path | None = None,
    *,
    timeout: int = 600,
    parameters: Mapping[str, Any] = SMOKE_PARAMETERS,
) -> GradeReport:
    """Run a student's notebook against the teacher's tests and score every tests cell.

    Errors never stop the run (a stubbed exercise only costs its own points: nbclient with
    ``allow_errors``, where papermill would stop at the first error); a cell running
    longer than `timeout` seconds is interrupted and fails. The kernel starts in the teacher
    notebook's folder, so relative paths resolve as in the book. This executes student code:
    grade in a container or an account with nothing to lose.
    """
    submission_path = Path(submission_path)
    source_path = Path(source_path) if source_path else teacher_notebook(submission_path.name)
    source = nbformat.read(source_path, as_version=4)
    tests = graded_cells(source)
    nb = grading_notebook(nbformat.read(submission_path, as_version=4), source, parameters)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        allow_errors=True,
        interrupt_on_timeout=True,
        resources={"metadata": {"path": str(source_path.parent)}},
    )
    kernel_death = None
    try:
        client.execute()
    except DeadKernelError as error:
        kernel_death = f"not run: the kernel died ({error})"
    executed = {_nbgrader(cell)["grade_id"]: cell for cell in nb.cells if _nbgrader(cell).get("grade_id") in tests}
    scores = [
        _score(grade_id, _nbgrader(cell)["points"], executed.get(grade_id), kernel_death)
        for grade_id, cell in tests.items()
    ]
    return GradeReport(str(submission_path), str(source_path), scores)


# --- command line -----------------------------------------------------------------------------


def _chapter_path(chapter: str) -> Path:
    """A notebook path, or a name prefix of one of the book's notebooks (``05`` -> ``book/05_....ipynb``)."""
    if Path(chapter).exists():
        return Path(chapter)
    matches = [path for path in book_notebooks() if path.name.startswith(chapter)]
    if len(matches) != 1:
        raise FileNotFoundError(f"'{chapter}' matches {len(matches)} notebooks in {BOOK_DIR}, expected one")
    return matches[0]


def _build_command(args: argparse.Namespace) -> int:
    notebooks = [_chapter_path(chapter) for chapter in args.chapters] or graded_chapters()
    if not notebooks:
        raise FileNotFoundError(f"no notebook with graded exercises in {BOOK_DIR}")
    for path in build_assignments(notebooks, args.out):
        print(path)
    return 0


def _grade_command(args: argparse.Namespace) -> int:
    report = grade(args.submission, args.source, timeout=args.timeout)
    print(report.format_table())
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(report.to_json() + "\n")
    return 0


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Register ``assignments build`` and ``assignments grade``; each sets ``func(args) -> exit code``."""
    parser = subparsers.add_parser("assignments", help="hand chapters out as assignments and grade them")
    commands = parser.add_subparsers(dest="assignments_command", required=True)

    build = commands.add_parser("build", help="write source/ and release/ (student) versions, nbgrader layout")
    build.add_argument(
        "chapters", nargs="*", help="notebooks or name prefixes in book/ (default: all with graded exercises)"
    )
    build.add_argument("-o", "--out", type=Path, default=Path("assignments"), help="course folder to write")
    build.set_defaults(func=_build_command)

    grade_parser = commands.add_parser("grade", help="run a submission against the hidden tests and score it")
    grade_parser.add_argument("submission", type=Path, help="the student's notebook")
    grade_parser.add_argument(
        "--source", type=Path, help="teacher notebook (default: the one with the same file name in book/)"
    )
    grade_parser.add_argument("--json", type=Path, help="also write the report as JSON here")
    grade_parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell")
    grade_parser.set_defaults(func=_grade_command)
