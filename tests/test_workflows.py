"""The GitHub Actions workflows: actionlint-clean, and each one does the job the README gives it.

actionlint (from the dev extra) type-checks expressions, action inputs and runner labels, and
runs shellcheck on every `run:` script when shellcheck is installed (the dev extra installs it).
"""

from __future__ import annotations

import importlib.util
import shlex
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)


def _workflow(name: str) -> dict:
    workflow = yaml.safe_load((WORKFLOWS / name).read_text(encoding="utf-8"))
    workflow["on"] = workflow.pop(True, workflow.get("on"))  # YAML 1.1 reads the key `on` as True
    return workflow


def _steps(workflow: dict) -> list[dict]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _uses(workflow: dict, action: str) -> list[dict]:
    return [step for step in _steps(workflow) if step.get("uses", "").split("@")[0] == action]


@pytest.fixture(scope="module")
def actionlint() -> str:
    executable = shutil.which("actionlint")
    if executable is None:
        pytest.skip("actionlint is not installed: `pip install -e '.[dev]' -c constraints.txt` installs it")
    return executable


def test_the_four_workflows_exist():
    assert sorted(path.name for path in WORKFLOWS.glob("*.yml")) == ["book.yml", "ci.yml", "gpu-book.yml", "release.yml"]


def test_every_workflow_passes_actionlint(actionlint):
    result = subprocess.run(
        [actionlint, "-no-color", *sorted(WORKFLOWS.glob("*.yml"))], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_rejects_a_broken_workflow(actionlint, tmp_path):
    """The lint test above can fail: a job without runs-on and a bad expression are reported."""
    broken = tmp_path / ".github" / "workflows" / "broken.yml"
    broken.parent.mkdir(parents=True)
    broken.write_text("on: push\njobs:\n  x:\n    steps:\n      - run: echo ${{ github.nope }}\n")
    result = subprocess.run([actionlint, "-no-color", broken], cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 1 and "runs-on" in result.stdout and "nope" in result.stdout


def test_ci_runs_the_ci_script_on_pushes_and_pull_requests_with_pip_caching():
    ci = _workflow("ci.yml")
    assert {"push", "pull_request"} <= set(ci["on"])
    (job,) = ci["jobs"].values()
    assert job["runs-on"] == "ubuntu-latest"
    assert any(step.get("run", "").strip() == "bash .ci/run" for step in job["steps"])
    (python,) = _uses(ci, "actions/setup-python")
    assert python["with"]["cache"] == "pip"
    assert "constraints.txt" in python["with"]["cache-dependency-path"]


def test_book_is_deployed_to_pages_from_main_and_kept_as_an_artifact_for_pull_requests():
    book = _workflow("book.yml")
    assert {"push", "pull_request"} <= set(book["on"]) and book["on"]["push"]["branches"] == ["main"]
    assert any(step.get("run", "").strip() == "make book" for step in book["jobs"]["build"]["steps"])
    (pages,) = _uses(book, "actions/upload-pages-artifact")
    (review,) = _uses(book, "actions/upload-artifact")
    assert pages["with"]["path"] == review["with"]["path"] == "_build/html"
    assert "pull_request" in review["if"] and "refs/heads/main" in pages["if"]
    deploy = book["jobs"]["deploy"]
    assert deploy["needs"] == "build" and "refs/heads/main" in deploy["if"]
    assert deploy["permissions"] == {"pages": "write", "id-token": "write"}
    assert [step["uses"].split("@")[0] for step in deploy["steps"]] == ["actions/deploy-pages"]


def test_gpu_book_runs_every_chapter_with_the_seeds_full_setting_on_a_gpu_runner():
    gpu = _workflow("gpu-book.yml")
    assert {"workflow_dispatch", "schedule"} <= set(gpu["on"])
    (job,) = gpu["jobs"].values()
    assert {"self-hosted", "gpu"} <= set(job["runs-on"])
    (build,) = [step for step in job["steps"] if "tools/build_book.py" in step.get("run", "")]
    words = shlex.split(build["run"])
    assert words[words.index("--device") + 1] == "cuda"
    parameters = {words[i + 1]: build_book.parse_value(words[i + 2]) for i, word in enumerate(words) if word == "-p"}
    reference = yaml.safe_load((ROOT / "configs" / "reference.yaml").read_text(encoding="utf-8"))
    assert parameters["size"] == reference["size"] and parameters["batch_size"] == reference["batch_size"]
    assert parameters["epochs"] == reference["gan_epochs"]
    assert parameters["pretrain_epochs"] == reference["pretrain_epochs"]
    assert parameters["data"] == "coco" and parameters["n_images"] == 10_000  # the reference tutorial's COCO sample
    declared = set().union(*(build_book.declared_parameters(chapter) for chapter in build_book.toc_chapters()))
    assert set(parameters) <= declared, "build_book.py exits 2 on a parameter no chapter declares"
    (upload,) = _uses(gpu, "actions/upload-artifact")
    assert upload["if"] == "always()"  # the executed notebooks show where a failed run stopped
    assert upload["with"]["path"].split() == ["_build/src", "_build/html"]


def test_release_builds_checks_publishes_with_trusted_publishing_and_attaches_the_checked_assets():
    release = _workflow("release.yml")
    assert release["on"] == {"push": {"tags": ["v*"]}}
    runs = [step.get("run", "") for step in release["jobs"]["build"]["steps"]]
    order = [next(i for i, run in enumerate(runs) if needle in run) for needle in (
        'tools/release.py check-tag "$GITHUB_REF_NAME"', "python -m build", "twine check --strict dist/*",
        "tools/release.py assets --from")]
    assert order == sorted(order), "check the tag first, then build, check, and gather the assets"
    publish = release["jobs"]["publish"]
    assert publish["permissions"] == {"id-token": "write"} and publish["environment"]["name"] == "pypi"
    assert [step["uses"].split("@")[0] for step in publish["steps"]][-1] == "pypa/gh-action-pypi-publish"
    assert not any("password" in step.get("with", {}) for step in publish["steps"]), "trusted publishing: no token"
    github = release["jobs"]["github-release"]
    assert github["permissions"] == {"contents": "write"} and "publish" in github["needs"]
    assert 'gh release create "$GITHUB_REF_NAME" dist/* assets/*' in github["steps"][-1]["run"]


def test_the_book_fetches_the_published_models_and_photos_with_a_cache_before_building():
    steps = _workflow("book.yml")["jobs"]["build"]["steps"]
    runs = [step.get("run", "").strip() for step in steps]
    assert runs.index("make install && make fetch") < runs.index("make book")
    cached = [step["with"]["path"] for step in _uses(_workflow("book.yml"), "actions/cache")]
    assert cached == ["~/.cache/colorlab/models", "~/.cache/colorlab/data"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert "-m colorlab models fetch $$name" in makefile and "-m colorlab data fetch eval" in makefile
