"""Grading a class that does everything wrong: one folder of submissions, one CSV, a reason per exercise.

A tiny synthetic assignment (two exercises on integers, no colorlab, no training) keeps each
kernel run to a second or two; every misbehaving submission sits in the same folder as a correct
one, so the test also shows that nothing stops the rest of the class being graded.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import nbformat
import pytest

from colorlab.assignments import CODE_STUB, solution_cell, student_version
from colorlab.assignments import tests_cell as make_tests_cell  # not collected as a test
from colorlab.grading import CSV_COLUMNS, grade_folder

EXERCISE_TIMEOUT = 4  # seconds: the cells below take milliseconds

SQUARE = solution_cell("def square(x):\n    ### BEGIN SOLUTION\n    return x * x\n    ### END SOLUTION", "square",
                       forbidden=["math.pow", "operator"])
SQUARE_TESTS = make_tests_cell(
    "assert square(3) == 9, 'square(3) is 9'\n### BEGIN HIDDEN TESTS\nassert square(-4) == 16, 'square(-4) is 16'\n"
    "### END HIDDEN TESTS", "square-tests", 1)
CUBE = solution_cell("def cube(x):\n    ### BEGIN SOLUTION\n    return x * x * x\n    ### END SOLUTION", "cube")
CUBE_TESTS = make_tests_cell(
    "assert cube(2) == 8\n### BEGIN HIDDEN TESTS\nassert cube(-3) == -27, 'cube(-3) is -27'\n### END HIDDEN TESTS",
    "cube-tests", 2)
TEACHER = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell("import math"),
    SQUARE, SQUARE_TESTS, CUBE, CUBE_TESTS,
])
CORRECT = {"square": "return x ** 2", "cube": "return x ** 3"}


def submission(answers: dict[str, str], edit=None) -> nbformat.NotebookNode:
    """The student version with `answers` (one indented function body each), then `edit` applied to it."""
    nb = student_version(TEACHER)
    for cell in nb.cells:
        answer = answers.get(cell.metadata.get("nbgrader", {}).get("grade_id"))
        if answer is not None:
            cell.source = cell.source.replace("\n    ".join(CODE_STUB), answer.replace("\n", "\n    "))
    if edit:
        edit(nb)
    return nb


def drop(grade_id):
    def edit(nb):
        nb.cells = [cell for cell in nb.cells if cell.metadata.get("nbgrader", {}).get("grade_id") != grade_id]

    return edit


def rename(nb):
    next(c for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "square-tests").metadata.nbgrader[
        "grade_id"] = "my-tests"


def weaken_tests(nb):
    for cell in nb.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "square-tests":
            cell.source = "assert True  # 'fixed' by the student"


def add_helper_cell(nb):
    nb.cells.insert(2, nbformat.v4.new_code_cell("from math import pow as power\nhelper = lambda x: power(x, 2)"))


CLASS = {  # student -> (submission, expected points per exercise, words expected in each reason)
    "ada": (submission(CORRECT), {"square-tests": 1, "cube-tests": 2}, {}),
    "ben": (submission({**CORRECT, "square": "while True:\n    pass"}), {"square-tests": 0, "cube-tests": 2},
            {"square-tests": "cell square-tests ran past its time limit of 4 s"}),
    "cy": (submission({**CORRECT, "square": "import time\nwhile True:\n    try:\n        time.sleep(1)\n"
                                            "    except BaseException:\n        pass"}),
           {"square-tests": 0, "cube-tests": 2}, {"square-tests": "cell square-tests ran past its time limit of 4 s"}),
    "dee": (submission({**CORRECT, "square": "import os\nos._exit(1)"}), {"square-tests": 0, "cube-tests": 2},
            {"square-tests": "cell square-tests killed the kernel"}),
    "eve": (submission({**CORRECT, "cube": "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)"}),
            {"square-tests": 1, "cube-tests": 0}, {"cube-tests": "cell cube-tests killed the kernel"}),
    "fay": (submission(CORRECT, drop("square-tests")), {"square-tests": 0, "cube-tests": 2},
            {"square-tests": "square-tests missing"}),
    "gus": (submission(CORRECT, drop("cube")), {"square-tests": 1, "cube-tests": 0}, {"cube-tests": "cube missing"}),
    "hal": (submission(CORRECT, rename), {"square-tests": 0, "cube-tests": 2}, {"square-tests": "grade_id changed"}),
    "ivy": (submission({**CORRECT, "square": "return x + x"}, weaken_tests), {"square-tests": 0, "cube-tests": 2},
            {"square-tests": "AssertionError: square(3) is 9"}),
    "jon": (submission(CORRECT, weaken_tests), {"square-tests": 1, "cube-tests": 2},
            {"square-tests": "visible tests edited"}),
    "kim": (submission({**CORRECT, "square": "print('x' * 3_000_000)\nreturn x * x"}),
            {"square-tests": 1, "cube-tests": 2}, {"square-tests": "output of cell square-tests cut at 100000 bytes"}),
    "lee": (submission({**CORRECT, "square": "return math.pow(x, 2)"}), {"square-tests": 0, "cube-tests": 2},
            {"square-tests": "cell square: line 2 uses math.pow, which this exercise forbids"}),
    "max": (submission({**CORRECT, "square": "from operator import mul as m\nreturn m(x, x)"}),
            {"square-tests": 0, "cube-tests": 2}, {"square-tests": "operator.mul (under operator)"}),
    "ned": (submission({**CORRECT, "square": "return helper(x)"}, add_helper_cell),
            {"square-tests": 0, "cube-tests": 2},
            {"square-tests": "cell 3: line 1 uses math.pow"}),
    "oli": (None, {"square-tests": 0, "cube-tests": 0}, {"square-tests": "cannot read", "cube-tests": "cannot read"}),
}


@pytest.fixture(scope="module")
def graded(tmp_path_factory) -> dict[tuple[str, str], dict[str, str]]:
    folder = tmp_path_factory.mktemp("submitted")
    teacher = folder.parent / "source.ipynb"
    nbformat.write(TEACHER, teacher)
    for student, (nb, _, _) in CLASS.items():
        path = folder / student / "homework" / "homework.ipynb"
        path.parent.mkdir(parents=True)
        if nb is None:
            path.write_text('{"cells": [')  # a truncated upload
        else:
            nbformat.write(nb, path)
    csv_path = folder.parent / "grades.csv"
    grade_folder(folder, csv_path, teacher, exercise_timeout=EXERCISE_TIMEOUT, max_output_bytes=100_000)
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    assert tuple(rows[0]) == CSV_COLUMNS
    return {(row["student"], row["exercise"]): row for row in rows}


@pytest.mark.parametrize("student", CLASS)
def test_every_submission_gets_a_score_and_a_one_line_reason_per_exercise(graded, student):
    _, points, reasons = CLASS[student]
    for exercise, expected in points.items():
        row = graded[(student, exercise)]
        assert float(row["points"]) == expected, (exercise, row)
        assert reasons.get(exercise, "") in row["reason"] and "\n" not in row["reason"], (exercise, row)
        assert bool(row["reason"]) == (exercise in reasons), (exercise, row)


def test_the_csv_has_exactly_one_row_per_student_and_exercise(graded):
    expected = [(student, exercise) for student in CLASS for exercise in ("square-tests", "cube-tests")]
    assert sorted(graded) == sorted(expected)


def test_a_hang_costs_about_its_time_limit_not_the_whole_run(tmp_path):
    looping = tmp_path / "class" / "ben.ipynb"
    looping.parent.mkdir()
    nbformat.write(CLASS["ben"][0], looping)
    teacher = tmp_path / "source.ipynb"
    nbformat.write(TEACHER, teacher)
    start = os.times().elapsed
    (report,) = grade_folder(looping.parent, tmp_path / "grades.csv", teacher, exercise_timeout=EXERCISE_TIMEOUT)
    assert os.times().elapsed - start < 60, "one hang: one time limit and one rerun, seconds"
    assert Path(report.submission).name == "ben.ipynb" and report.points == 2
    assert (tmp_path / "grades.csv").read_text().splitlines()[1].startswith("ben,source,square-tests,0,1,")
