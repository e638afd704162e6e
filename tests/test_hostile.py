"""The hostile corpus, kernel half: submissions that attack the grader itself, each contained.

A small torch assignment (three exercises: plain tensors, autograd, a module changed in place)
stands in for a chapter, so that each kernel takes seconds. Every hostile submission is graded in
one class folder with an honest one; each case names what it expects (0 with a reason, or the
honest score when the attack was contained). docs/grading.md tabulates these cases.
"""

from __future__ import annotations

import csv
import hashlib
import os
import subprocess
import time
from pathlib import Path

import nbformat
import pytest

from colorlab import grading
from colorlab.assignments import CODE_STUB, solution_cell, student_version
from colorlab.assignments import tests_cell as make_tests_cell  # not collected as a test
from colorlab.grading import AnswerKeyChanged, grade, grade_folder
from colorlab.sandbox import isolation

NORMALIZE = solution_cell("def normalize(lab):\n    ### BEGIN SOLUTION\n    return lab[:, :1] / 50 - 1, lab[:, 1:] / 110\n"
                          "    ### END SOLUTION", "normalize", forbidden=["colorlab.color"], allowed=["torch"])
NORMALIZE_TESTS = make_tests_cell(
    "lab = torch.rand(2, 3, 4, 4) * 100\nL, ab = normalize(lab)\nassert L.shape == (2, 1, 4, 4)\n"
    "### BEGIN HIDDEN TESTS\nassert torch.allclose(L, lab[:, :1] / 50 - 1, atol=1e-6), 'L is not L / 50 - 1'\n"
    "assert torch.allclose(ab, lab[:, 1:] / 110, atol=1e-6), 'ab is not ab / 110'\n### END HIDDEN TESTS",
    "normalize-tests", 2)
HALF_SQUARES = solution_cell("def half_squares(x):\n    ### BEGIN SOLUTION\n    return (x ** 2).sum() / 2\n"
                             "    ### END SOLUTION", "half-squares")  # no rules: only the structure protects it
HALF_SQUARES_TESTS = make_tests_cell(
    "x = torch.randn(5, requires_grad=True)\ny = half_squares(x)\nassert y.shape == ()\n### BEGIN HIDDEN TESTS\n"
    "assert torch.allclose(y, (x.detach() ** 2).sum() / 2), 'not half the sum of squares'\n"
    "assert y.requires_grad, 'keep the graph'\ny.backward()\n"
    "assert torch.allclose(x.grad, x.detach()), 'the gradient of x^2 / 2 is x'\n### END HIDDEN TESTS",
    "half-squares-tests", 1)
FREEZE = solution_cell("def freeze(net):\n    ### BEGIN SOLUTION\n    for p in net.parameters():\n"
                       "        p.requires_grad_(False)\n    ### END SOLUTION", "freeze", forbidden=["colorlab.stages"])
FREEZE_TESTS = make_tests_cell(
    "net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))\n"
    "### BEGIN HIDDEN TESTS\nassert freeze(net) is None\nassert not any(p.requires_grad for p in net.parameters()), "
    "'some parameters still require gradients'\nassert net.training, 'freezing is not eval()'\n### END HIDDEN TESTS",
    "freeze-tests", 1)
TEACHER = nbformat.v4.new_notebook(cells=[
    nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters"]}),
    nbformat.v4.new_code_cell("import torch\nimport colorlab"),
    NORMALIZE, NORMALIZE_TESTS, HALF_SQUARES, HALF_SQUARES_TESTS, FREEZE, FREEZE_TESTS,
])
RIGHT = {"normalize": "return lab[:, :1] / 50 - 1, lab[:, 1:] / 110", "half-squares": "return (x ** 2).sum() / 2",
         "freeze": "for p in net.parameters():\n    p.requires_grad_(False)"}
FULL = {"normalize-tests": 2, "half-squares-tests": 1, "freeze-tests": 1}
STUBBED = {"normalize": None, "half-squares": None, "freeze": None}
EXERCISE_TIMEOUT = 20  # seconds; the cells take milliseconds, the first `import torch` a few seconds
SUBMISSION_TIMEOUT = 75  # seconds: five kernel starts fit on a loaded 2-core machine; 30 sleeps of 3 s do not


def submission(answers: dict[str, str | None], cells_before: list[str] = (), at: int = 2) -> nbformat.NotebookNode:
    """The student version with `answers` (None: left as the stub) and extra code cells at `at` (after the imports).

    At 4 they belong to the exercise without rules (no whitelist), so only the sandbox stands in their way.
    """
    nb = student_version(TEACHER)
    for cell in nb.cells:
        answer = answers.get(cell.metadata.get("nbgrader", {}).get("grade_id"))
        if answer is not None:
            cell.source = cell.source.replace("\n    ".join(CODE_STUB), answer.replace("\n", "\n    "))
    nb.cells[at:at] = [nbformat.v4.new_code_cell(code) for code in cells_before]
    return nb


LYING_TENSOR = """class Liar(torch.Tensor):
    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.allclose:
            return True
        return super().__torch_function__(func, types, args, kwargs or {})
"""
KEY = "{key}"  # replaced by the answer key's path: a hostile student finds it with `find /`
STRAY = "sleep 37.25"  # a process a submission leaves behind, recognisable in the process table

CORPUS = {  # case -> (submission, expected points per exercise, a word of each expected reason)
    # Cells added at 2 are checked against every rule; at 4 (or in half_squares) only the sandbox stops them.
    "honest": (submission(RIGHT), FULL, {}),
    "stubs": (submission(STUBBED), dict.fromkeys(FULL, 0), dict.fromkeys(FULL, "NotImplementedError")),
    "hides its errors (showtraceback)": (
        submission(STUBBED, ["import IPython\nIPython.get_ipython().showtraceback = lambda *a, **k: None"], at=4),
        dict.fromkeys(FULL, 0), dict.fromkeys(FULL, "")),
    "rewrites the answer key": (
        submission(RIGHT, [f"import json\nkey = json.load(open({KEY!r}))\nfor c in key['cells']:\n    c['source'] = 'pass'\n"
                           f"json.dump(key, open({KEY!r}, 'w'))"], at=4), FULL, dict.fromkeys(["half-squares-tests"], "")),
    "reads the hidden tests": (
        submission({**RIGHT, "half-squares": f"import glob\nfound = [p for p in glob.glob('**', recursive=True) + "
                                             f"[{KEY!r}] if ('BEGIN ' + 'HIDDEN') in open(p, errors='ignore').read()]\n"
                                             "assert found, 'no hidden tests within reach'\n" + RIGHT["half-squares"]}),
        {**FULL, "half-squares-tests": 0}, {"half-squares-tests": "no hidden tests within reach"}),
    "leaves a process behind": (
        submission(RIGHT, [f"import subprocess\nsubprocess.Popen(['sh', '-c', '{STRAY}'], start_new_session=True)"], at=4),
        FULL, dict.fromkeys(FULL, "left behind")),
    "returns a lying tensor subclass": (  # the dunder costs the exercises with rules; the structure, the other
        submission({**RIGHT, "half-squares": "return torch.zeros(()).as_subclass(Liar)"}, [LYING_TENSOR], at=4),
        dict.fromkeys(FULL, 0), {"half-squares-tests": "AssertionError: not half the sum of squares",
                                 "normalize-tests": "__torch_function__", "freeze-tests": "__torch_function__"}),
    "patches torch.allclose in its kernel": (
        submission({**RIGHT, "half-squares": "torch.__dict__['allclose'] = lambda *a, **k: True\n"
                                             "object.__setattr__(torch, 'isclose', lambda *a, **k: True)\nreturn x.sum()"}),
        dict.fromkeys(FULL, 0), {"half-squares-tests": "AssertionError: not half the sum of squares",
                                 "normalize-tests": "__dict__", "freeze-tests": "__dict__"}),
    "returns something that is not plain data": (
        submission({**RIGHT, "normalize": "return (lambda: 0), None"}),
        {**FULL, "normalize-tests": 0}, {"normalize-tests": "not plain data"}),
    "detaches the graph": (
        submission({**RIGHT, "half-squares": "return torch.tensor(float((x ** 2).sum() / 2))"}),
        {**FULL, "half-squares-tests": 0}, {"half-squares-tests": "keep the graph"}),
    "kills its kernel five times": (
        submission(RIGHT, ["import os\nos._exit(1)"] * 5, at=4), {**FULL, "half-squares-tests": 0, "freeze-tests": 0},
        {"half-squares-tests": "killed the kernel", "freeze-tests": "the kernel failed 4 times"}),
    "sleeps through its budget": (
        submission(RIGHT, ["import time\ntime.sleep(3)"] * 30, at=4), {**FULL, "half-squares-tests": 0, "freeze-tests": 0},
        {"half-squares-tests": "budget", "freeze-tests": "budget"}),
    "too deep to read": (
        submission(RIGHT, ["x = " + " + ".join(["1"] * 3000)], at=4), dict.fromkeys(FULL, 0),
        dict.fromkeys(FULL, "too deeply nested")),
}
if isolation() == "namespaces":  # needs root and unshare; elsewhere the network is not walled (docs/grading.md)
    CORPUS["reaches the network"] = (
        submission({**RIGHT, "half-squares": "import urllib.request\nurllib.request.urlopen('http://1.1.1.1', timeout=3)\n"
                                             + RIGHT["half-squares"]}),
        {**FULL, "half-squares-tests": 0}, {"half-squares-tests": "unreachable"})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    folder = tmp_path_factory.mktemp("submitted")
    key = folder.parent / "source.ipynb"
    nbformat.write(TEACHER, key)
    digest = hashlib.sha256(key.read_bytes()).hexdigest()
    for index, (case, (nb, _, _)) in enumerate(CORPUS.items()):
        path = folder / f"{index:02d}" / "homework.ipynb"
        path.parent.mkdir()
        path.write_text(nbformat.writes(nb).replace(KEY, str(key)))
    csv_path = folder.parent / "grades.csv"
    start = time.monotonic()
    grade_folder(folder, csv_path, key, exercise_timeout=EXERCISE_TIMEOUT, submission_timeout=SUBMISSION_TIMEOUT)
    elapsed = time.monotonic() - start
    time.sleep(1)
    with open(csv_path, newline="") as file:
        rows = list(csv.DictReader(file))
    table = {(list(CORPUS)[int(row["student"])], row["exercise"]): row for row in rows}
    if os.environ.get("COLORLAB_CORPUS_TABLE"):  # docs/grading.md: the observed column
        lines = ["| case | exercise | expected | observed points | observed reason |", "|---|---|---|---|---|"]
        for (case, exercise), row in table.items():
            lines.append(f"| {case} | {exercise} | {CORPUS[case][1][exercise]:g} | {row['points']} | "
                         f"{row['reason'].replace('|', '/')} |")
        Path(os.environ["COLORLAB_CORPUS_TABLE"]).write_text("\n".join(lines) + "\n")
    return table, digest, key, elapsed, csv_path


@pytest.mark.parametrize("case", CORPUS)
def test_each_hostile_submission_is_contained_with_a_one_line_reason(graded, case):
    table, *_ = graded
    _, points, reasons = CORPUS[case]
    for exercise, expected in points.items():
        row = table[(case, exercise)]
        assert float(row["points"]) == expected, (case, exercise, row)
        assert reasons.get(exercise, "") in row["reason"] and "\n" not in row["reason"], (case, exercise, row)
        if expected == 0:
            assert row["reason"], (case, exercise, "a zero needs its reason")


def test_the_answer_key_is_untouched_and_no_process_survives_grading(graded):
    _, digest, key, _, _ = graded
    assert hashlib.sha256(key.read_bytes()).hexdigest() == digest, "a submission changed the answer key"
    survivors = subprocess.run(["pgrep", "-f", STRAY], capture_output=True, text=True).stdout.split()
    assert not survivors, f"processes outlived grading: {survivors}"


def test_a_class_of_hostile_submissions_costs_bounded_time(graded):
    *_, elapsed, _ = graded
    budget = SUBMISSION_TIMEOUT + 4 * EXERCISE_TIMEOUT  # the worst case: one submission's budget plus a hang per restart
    assert elapsed < len(CORPUS) * budget, elapsed


def test_the_grader_refuses_to_go_on_when_the_answer_key_changes(tmp_path, monkeypatch):
    key = tmp_path / "source.ipynb"
    nbformat.write(TEACHER, key)
    folder = tmp_path / "class"
    for student in ("a", "b"):
        nbformat.write(submission(RIGHT), (folder / student / "homework.ipynb").parent.mkdir(parents=True)
                       or folder / student / "homework.ipynb")
    honest_grade = grading.grade

    def grade_then_tamper(*args, **kwargs):  # the key changes on disk while the class is graded
        report = honest_grade(*args, **kwargs)
        key.write_text(key.read_text().replace("L is not L / 50 - 1", "anything goes"))
        return report

    monkeypatch.setattr(grading, "grade", grade_then_tamper)
    with pytest.raises(AnswerKeyChanged, match="changed during grading"):
        grade_folder(folder, tmp_path / "grades.csv", key, exercise_timeout=EXERCISE_TIMEOUT)
    rows = (tmp_path / "grades.csv").read_text().splitlines()
    assert [row.split(",")[0] for row in rows[1:]] == ["a"] * 3, "grades stop at the submission that saw the change"


def test_an_honest_submission_scores_full_on_its_own(tmp_path):
    key = tmp_path / "source.ipynb"
    nbformat.write(TEACHER, key)
    path = tmp_path / "homework.ipynb"
    nbformat.write(submission(RIGHT), path)
    report = grade(path, key, exercise_timeout=EXERCISE_TIMEOUT)
    assert report.points == report.max_points == 4, report.format_table()
