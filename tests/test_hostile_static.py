"""The hostile corpus, static half: every way around the forbidden-name rule that a student tried, refused.

No kernel runs here. Each case is a solution cell after the chapter's imports; the expected
outcome is a one-line reason, and the honest solutions pass. The kernel half (what the code
does when it runs) is tests/test_hostile.py; docs/grading.md tabulates both.
"""

from __future__ import annotations

import nbformat
import pytest

from colorlab.assignments import solution_cell
from colorlab.assignments import tests_cell as make_tests_cell  # not collected as a test
from colorlab.grading import exercises, grading_notebook, rule_breaches
from colorlab.integrity import NameResolver, check_cell, python_source

CHAPTER = "import colorlab\nfrom colorlab import color, evaluate\nimport torch\nimport os\n"
FORBIDDEN = ["colorlab.evaluate", "colorlab.color.normalize_lab"]

BYPASSES = {  # issue 26, item 4, and the ones before it: each must be refused with one line
    "import in the same cell": "import colorlab.color as cc\ndef f(lab):\n    return cc.normalize_lab(lab)",
    "local alias": "def f(ab):\n    c = colorlab.evaluate\n    return c.chroma(ab)",
    "default argument": "def f(ab, c=colorlab.evaluate):\n    return c.chroma(ab)",
    "__dict__": "def f(ab):\n    return colorlab.__dict__['evaluate'].chroma(ab)",
    "operator.attrgetter": "import operator\ndef f(ab):\n    return operator.attrgetter('evaluate.chroma')(colorlab)(ab)",
    "object.__getattribute__": "def f(ab):\n    return object.__getattribute__(colorlab, 'evaluate').chroma(ab)",
    "os.sys.modules": "def f(ab):\n    return os.sys.modules['colorlab.evaluate'].chroma(ab)",
    "torch.sys.modules": "def f(ab):\n    return torch.sys.modules['colorlab.evaluate'].chroma(ab)",
    "for binding": "for m in [colorlab.evaluate]:\n    pass\ndef f(ab):\n    return m.chroma(ab)",
    "with binding": "import contextlib\nwith contextlib.nullcontext(colorlab.evaluate) as m:\n    pass\n"
                    "def f(ab):\n    return m.chroma(ab)",
    "walrus": "if (m := colorlab.evaluate):\n    pass\ndef f(ab):\n    return m.chroma(ab)",
    "class attribute": "class K:\n    e = colorlab.evaluate\ndef f(ab):\n    return K.e.chroma(ab)",
    "re-export colorlab.io.chroma": "def f(ab):\n    return colorlab.io.chroma(ab).mean(dim=(1, 2))",
    "re-export imported": "from colorlab.io import chroma\ndef f(ab):\n    return chroma(ab)",
    "module rebinding later in the notebook": "def f(ab):\n    return later.chroma(ab)\nlater = evaluate",
    "vars()": "def f(ab):\n    return vars(colorlab)['evaluate'].chroma(ab)",
    "globals()": "def f(ab):\n    return globals()['evaluate'].chroma(ab)",
    "getattr with a dunder": "def f(ab):\n    return getattr(colorlab, '__dict__')['evaluate'].chroma(ab)",
    "gc.get_objects": "import gc\ndef f(ab):\n    return [o for o in gc.get_objects()][0]",
    "patch torch.allclose": "torch.allclose = lambda *a, **k: True",
    "patch via __dict__": "torch.__dict__['allclose'] = lambda *a, **k: True",
    "patch via object.__setattr__": "object.__setattr__(torch, 'allclose', lambda *a, **k: True)",
}

HONEST = {
    "chroma by hand": "def f(ab):\n    a, b = (ab * color.AB_SCALE).unbind(dim=1)\n    return torch.sqrt(a**2 + b**2).mean(dim=(1, 2))",
    "parameter named like a module": "def f(evaluate, x):\n    return evaluate.psnr(x)",
    "nn.Module subclass": "class Net(torch.nn.Module):\n    def __init__(self):\n        super().__init__()\n"
                          "        self.w = torch.nn.Parameter(torch.zeros(1))",
}


def check(code: str, forbidden=FORBIDDEN, allowed=None) -> str | None:
    resolver = NameResolver()
    resolver.learn(python_source(CHAPTER))
    return check_cell(python_source(code), resolver, forbidden, allowed)


@pytest.mark.parametrize("case", BYPASSES)
def test_each_way_around_the_forbidden_names_is_refused_in_one_line(case):
    problem = check(BYPASSES[case])
    assert problem and problem.startswith("line ") and "\n" not in problem, (case, problem)


@pytest.mark.parametrize("case", HONEST)
def test_honest_code_passes(case):
    assert check(HONEST[case]) is None


def test_a_re_export_is_the_object_it_denotes():
    import colorlab.evaluate
    import colorlab.io

    assert colorlab.io.chroma is colorlab.evaluate.chroma  # the premise: chapter 6's mean-chroma bypass
    assert "colorlab.evaluate.chroma (under colorlab.evaluate)" in check(BYPASSES["re-export colorlab.io.chroma"])


def test_a_whitelist_refuses_what_it_does_not_name():
    allowed = ["torch", "colorlab.color.AB_SCALE"]
    assert check(HONEST["chroma by hand"], forbidden=[], allowed=allowed) is None
    problem = check("import numpy as np\ndef f(ab):\n    return np.hypot(*ab)", forbidden=[], allowed=allowed)
    assert "numpy" in problem and "not among the names this exercise allows" in problem
    problem = check("def f(ab):\n    return colorlab.io.chroma(ab)", forbidden=[], allowed=["torch", "colorlab.io"])
    assert "colorlab.evaluate.chroma" in problem, "a whitelist of a module does not let its re-exports through"


def _one_exercise(code: str) -> dict[str, str]:
    teacher = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(CHAPTER),
        solution_cell("def f(ab):\n    ### BEGIN SOLUTION\n    return ab\n    ### END SOLUTION", "f", FORBIDDEN),
        make_tests_cell("assert f(1) == 1", "f-tests", 1),
    ])
    submission = grading_notebook(teacher, teacher)
    submission.cells[1].source = code
    return rule_breaches(submission, teacher, exercises(teacher))


@pytest.mark.parametrize("code", ["x = " + " + ".join(["1"] * 3000), "x = " + "-" * 20000 + "1",
                                  "x = " + "not " * 5000 + "1"], ids=["3000 terms", "20000 minus", "5000 not"])
def test_code_too_deep_to_read_scores_zero_with_one_line_not_a_traceback(code):
    reason = _one_exercise(code)["f-tests"]
    assert "\n" not in reason and ("too deeply nested" in reason or "forbids" in reason), reason


def test_a_whitelisted_solution_cannot_launder_a_call_through_a_helper_cell():
    teacher = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import torch"),
        solution_cell("def f(ab):\n    ### BEGIN SOLUTION\n    return ab\n    ### END SOLUTION", "f", allowed=["torch"]),
        make_tests_cell("assert f(1) == 1", "f-tests", 1),
    ])
    submission = grading_notebook(teacher, teacher)
    submission.cells.insert(1, nbformat.v4.new_code_cell("import numpy\ndef helper(ab):\n    return numpy.hypot(*ab)"))
    submission.cells[2].source = "def f(ab):\n    return helper(ab)"
    reason = rule_breaches(submission, teacher, exercises(teacher))["f-tests"]
    assert "helper, which the student's code defines outside the solution" in reason
    submission.cells[2].source = "def f(ab):\n    return numpy.hypot(*ab)"
    assert "numpy" in rule_breaches(submission, teacher, exercises(teacher))["f-tests"]


def test_the_books_mean_chroma_refuses_the_re_export_and_declares_a_whitelist():
    from colorlab.assignments import graded_chapters
    from test_integrity import answered

    (chapter,) = [path for path in graded_chapters() if path.name.startswith("06")]
    teacher = nbformat.read(chapter, as_version=4)
    assert all(exercise.allowed for exercise in exercises(teacher)), "every exercise of the chapter has a whitelist"
    cheat = answered(teacher, {"mean-chroma": "import colorlab.io\nreturn colorlab.io.chroma(ab).mean(dim=(1, 2))"})
    reason = rule_breaches(grading_notebook(cheat, teacher), teacher, exercises(teacher))["mean-chroma-tests"]
    assert "colorlab.evaluate.chroma" in reason and "\n" not in reason, reason
