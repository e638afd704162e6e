"""Forbidden names: the static check on student code, and the book's exercises that declare them (no kernel)."""

from __future__ import annotations

import nbformat
import pytest

from colorlab.assignments import CODE_STUB, forbidden_names, graded_chapters, student_version
from colorlab.grading import exercises, grading_notebook, rule_breaches
from colorlab.integrity import NameResolver, check_cell, python_source

CHAPTER_IMPORTS = "from colorlab import evaluate, losses\nimport torch\nfrom torch.nn import functional as F\n"
FORBIDDEN = ["colorlab.evaluate", "skimage.metrics"]


def check(code: str, forbidden=FORBIDDEN, before: str = CHAPTER_IMPORTS) -> str | None:
    resolver = NameResolver()
    resolver.learn(python_source(before))
    return check_cell(python_source(code), resolver, forbidden)


@pytest.mark.parametrize(
    "code",
    [
        "import colorlab.evaluate\ndef psnr(p, t):\n    return colorlab.evaluate.psnr(p, t)",
        "from colorlab.evaluate import psnr as p\ndef psnr(pred, target):\n    return p(pred, target)",
        "import colorlab.evaluate as ev\ndef psnr(p, t):\n    return ev.psnr(p, t)",
        "def psnr(p, t):\n    return evaluate.psnr(p, t)",  # the chapter imported `evaluate`
        "from colorlab import evaluate as e\nmetric = e.psnr\ndef psnr(p, t):\n    return metric(p, t)",
        "def psnr(p, t):\n    return getattr(evaluate, 'psnr')(p, t)",
        "def psnr(p, t):\n    from skimage.metrics import peak_signal_noise_ratio as metric\n    return metric(t, p)",
        "from colorlab.evaluate import *",
        "from colorlab import *",
    ],
)
def test_every_way_to_reach_a_forbidden_name_is_caught(code):
    problem = check(code)
    assert problem is not None and "forbids" in problem and problem.startswith("line ")


@pytest.mark.parametrize(
    ("code", "word"),
    [
        ("def psnr(p, t):\n    return getattr(evaluate, 'ps' + 'nr')(p, t)", "colorlab.evaluate"),
        ("def psnr(p, t):\n    return __import__('colorlab.evaluate').evaluate.psnr(p, t)", "__import__"),
        ("import importlib\nmodule = importlib.import_module('colorlab.' + 'evaluate')", "importlib"),
        ("def psnr(p, t):\n    return eval('evaluate.psnr')(p, t)", "eval"),
        ("%run cheat.py", "get_ipython"),
    ],
)
def test_names_built_at_run_time_are_refused_where_names_are_forbidden(code, word):
    assert word in check(code)
    assert check(code, forbidden=[]) is None or word == "colorlab.evaluate"


def test_changing_a_library_the_tests_use_is_refused_even_without_forbidden_names():
    assert "torch.allclose" in check("torch.allclose = lambda *args, **kwargs: True", forbidden=[])
    assert "torch.isclose" in check("setattr(torch, 'isclose', lambda *args: True)", forbidden=[])


@pytest.mark.parametrize(
    "code",
    [
        "def psnr(pred, target):\n    mse = ((pred - target) ** 2).flatten(start_dim=1).mean(dim=1)\n"
        "    return 10 * torch.log10(1 / mse)",
        # a parameter called like the chapter's module is the function's own, not colorlab.evaluate
        "def apply(evaluate, x):\n    return evaluate.psnr(x)",
        "def loss(a, b):\n    return F.binary_cross_entropy_with_logits(a, b)",
        "import math\nfrom torch.nn import functional as G\nx = G.l1_loss",
    ],
)
def test_independent_code_passes(code):
    assert check(code) is None


def test_a_malformed_declaration_is_refused():
    cell = nbformat.v4.new_code_cell("", metadata={"colorlab": {"forbidden": "colorlab.evaluate"}})
    with pytest.raises(ValueError, match="list of dotted names"):
        forbidden_names(cell)


# --- the book's exercises: the one-line cheat of each, caught without running the chapter ----------

CHEATS = {
    "d-loss": 'return losses.discriminator_loss(losses.GANLoss("vanilla"), real_logits, fake_logits)["loss_D"]',
    "g-loss": 'return losses.generator_loss(losses.GANLoss("vanilla"), fake_logits, fake_ab, real_ab, lam)["loss_G"]',
    "gray-first-conv": 'return models.build_generator("resnet18", 64)[0][0].weight',
    "mean-chroma": "return evaluate.chroma(ab).mean(dim=(1, 2))",
    "best-guesses": "import colorlab.evaluate as ev\nreturn ev.chroma(colours), weights",
    "blotch-window": "from colorlab.evaluate import chroma\n"
                     "return divmod(int((chroma(predicted_ab) - chroma(true_ab)).argmax()), true_ab.shape[-1])",
    "lsgan-loss": 'from colorlab.losses import GANLoss as Loss\nreturn Loss("lsgan")(logits, target_is_real)',
    "freeze-discriminator": "import colorlab.stages\ncolorlab.stages.set_requires_grad(net, flag)",
    "psnr": "from colorlab.evaluate import psnr as p\nreturn p(pred, target)",
    "colourfulness": "import colorlab.evaluate as ev\nreturn ev.colourfulness(rgb)",
    "soft-encoding": "from colorlab.classify import soft_encode as encode\n"
                     "indices, weights = encode((ab / 110).view(1, 2, 1, 1), bins)\n"
                     "return indices.flatten(), weights.flatten()",
    "annealed-mean": "import colorlab.classify as cl\nreturn cl.decode(logits, bins / 110, temperature) * 110",
    "paint-hints": "import colorlab.hints as h\nreturn h.simulate_hints(ab[None], 0, 0, torch.zeros(1))[0]",
    "number-of-hints": "from colorlab import hints\nreturn hints.torch.floor(hints.torch.log(u) / math.log(1 - p)).long()",
}


def answered(teacher: nbformat.NotebookNode, answers: dict[str, str]) -> nbformat.NotebookNode:
    """The student version with `answers` in place of the stubs (indented like them)."""
    submission = student_version(teacher)
    stub = "\n".join(CODE_STUB)
    for cell in submission.cells:
        answer = answers.get(cell.metadata.get("nbgrader", {}).get("grade_id"))
        if answer is not None:
            indent = cell.source.split(CODE_STUB[0])[0].split("\n")[-1]
            cell.source = cell.source.replace(stub.replace("\n", "\n" + indent), answer.replace("\n", "\n" + indent))
    return submission


@pytest.mark.parametrize("chapter", graded_chapters(), ids=lambda path: path.stem)
def test_each_exercise_that_forbids_names_scores_zero_for_its_one_line_cheat(chapter):
    teacher = nbformat.read(chapter, as_version=4)
    graded = exercises(teacher)
    assert all(exercise.forbidden for exercise in graded), "every graded exercise of the book declares forbidden names"
    assert rule_breaches(grading_notebook(student_version(teacher), teacher), teacher, graded) == {}
    assert rule_breaches(teacher, teacher, graded) == {}, "the teacher's own solutions keep the rules"
    for exercise in graded:
        (solution,) = exercise.solutions
        submission = answered(teacher, {solution: CHEATS[solution]})
        breaches = rule_breaches(grading_notebook(submission, teacher), teacher, graded)
        assert exercise.grade_id in breaches and "forbids" in breaches[exercise.grade_id], solution
