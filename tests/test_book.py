"""The book: chapter conventions, clean sources, smoke execution with papermill, and the HTML build.

Chapters are discovered from _toc.yml, so a new chapter is tested as soon as it is listed.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
from pathlib import Path

import nbformat
import papermill
import pytest
import yaml
from jupyter_book.config import get_final_config
from papermill.exceptions import PapermillExecutionError

import colorlab

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("build_book", ROOT / "tools" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(build_book)

pytestmark = pytest.mark.book

CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text(encoding="utf-8"))
REPOSITORY = CONFIG["repository"]["url"]  # https://github.com/<org>/<repo>
COLAB = f"https://colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}/blob/main"
CHAPTERS = build_book.toc_chapters()
TEMPLATE = ROOT / "book" / "_template.ipynb"
STUB = ROOT / "book" / "01_lab_colour.ipynb"  # the chapter that validates `size`
NOTEBOOKS = sorted((ROOT / "book").rglob("*.ipynb"))  # every committed notebook, template included
# Every chapter declares these (the list); training chapters add more (pretrain_epochs, pretrained).
REQUIRED_PARAMETERS = {"size", "epochs", "n_images", "batch_size", "device", "data", "seed", "smoke"}

# Chapters explain and call colorlab; code that re-implements it belongs in the library.
# Graded exercises (cells with nbgrader metadata, see book/teaching.md) are exempt: there the
# student writes such code on purpose and hidden tests compare it with colorlab's.
FORBIDDEN_CODE = {
    r"class\s+\w+\s*\(.*nn\.Module": "defines a model (put it in colorlab.models)",
    r"def\s+\w*loss\w*\s*\(": "defines a loss (put it in colorlab.losses)",
    r"rgb2lab": "converts to Lab itself (use colorlab.color)",
    r"\.backward\(": "runs a training loop (use colorlab.train)",
}


def _ids(paths):
    return [path.name for path in paths]


def _code_cells(notebook: Path):
    return [cell for cell in nbformat.read(notebook, as_version=4).cells if cell.cell_type == "code"]


def _parameter_defaults(cell) -> dict:
    """name -> (declared type name or None, default value) for every assignment of a parameters cell."""
    defaults = {}
    for node in ast.parse(cell.source).body:
        if isinstance(node, ast.AnnAssign):
            defaults[node.target.id] = (ast.unparse(node.annotation), ast.literal_eval(node.value))
        elif isinstance(node, ast.Assign):
            defaults[node.targets[0].id] = (None, ast.literal_eval(node.value))
    return defaults


# --- table of contents and configuration ---------------------------------------------------


def test_the_book_config_and_the_library_name_the_same_repository():
    import colorlab

    assert REPOSITORY == colorlab.REPOSITORY_URL, "_config.yml repository.url and colorlab.REPOSITORY_URL disagree"


# Every way a file can name the repository: GitHub itself, Colab's and Binder's views of it.
REPOSITORY_REFERENCE = re.compile(r"(?:github\.com|colab\.research\.google\.com/github|mybinder\.org/v2/gh)"
                                  r"/([\w.-]+)/([\w-]+(?:\.[\w-]+)*)")
SCANNED_SUFFIXES = {".md", ".ipynb", ".yml", ".yaml", ".toml", ".py", ".txt", ".cfg", ".html", ""}
NOT_SCANNED = {".git", "_build", "runs", ".pytest_cache", ".hypothesis", "__pycache__", "node_modules"}


def _repository_files():
    for path in sorted(ROOT.rglob("*")):
        if path.is_file() and path.suffix in SCANNED_SUFFIXES and not NOT_SCANNED & set(path.relative_to(ROOT).parts):
            yield path


def test_every_copy_of_the_repository_url_agrees_with_colorlab_repository_url():
    """Badges, install cells, launch buttons, Binder links, pyproject's URLs: one repository, the library's."""
    owner, name = colorlab.REPOSITORY_URL.removeprefix("https://github.com/").split("/")
    found, stale = 0, []
    for path in _repository_files():
        text = path.read_text(encoding="utf-8", errors="replace")
        for match in REPOSITORY_REFERENCE.finditer(text):
            if owner in match.groups() or name in match.groups():  # a copy of ours, not another project's
                found += 1
                if match.groups() != (owner, name):
                    stale.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert not stale, "these disagree with colorlab.REPOSITORY_URL: " + "; ".join(stale)
    assert found >= len(NOTEBOOKS)  # each notebook's badge was seen


def test_pyproject_version_and_urls_agree_with_the_library():
    tomllib = pytest.importorskip("tomllib", reason="tomllib (Python >= 3.11) reads pyproject.toml")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["name"] == colorlab.DISTRIBUTION and project["dynamic"] == ["version"]
    assert tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["dynamic"] == \
        {"version": {"attr": "colorlab.__version__"}}  # the install cells pin colorlab-book==<version>
    assert project["urls"] and all(url.startswith(colorlab.REPOSITORY_URL) for url in project["urls"].values())
    torch_requirement = next(r for r in project["dependencies"] if r.startswith("torch>") or r.startswith("torch<"))
    assert "<" not in torch_requirement, "an upper bound on torch makes Colab downgrade its own torch"


def test_toc_starts_at_the_landing_page_and_lists_only_existing_pages():
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text(encoding="utf-8"))
    assert toc["format"] == "jb-book"
    pages = build_book.toc_pages()  # raises FileNotFoundError for a listed page that is missing
    assert pages[0] == ROOT / "book" / "index.md"
    assert STUB in CHAPTERS


def test_toc_discovery_fails_on_a_missing_page(tmp_path):
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: index\nchapters:\n  - file: gone\n")
    (tmp_path / "index.md").write_text("# Home\n")
    with pytest.raises(FileNotFoundError, match="gone"):
        build_book.toc_pages(tmp_path)


def test_every_chapter_notebook_is_listed_in_the_toc():
    chapter_files = {path for path in (ROOT / "book").glob("*.ipynb") if not path.name.startswith("_")}
    assert chapter_files == set(CHAPTERS)
    for chapter in CHAPTERS:
        assert re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", chapter.name), chapter.name


def test_config_renders_pre_executed_notebooks_offline():
    sphinx, _ = get_final_config(
        user_yaml=ROOT / "_config.yml",
        cli_config={"latex_individualpages": False},
        sourcedir=ROOT,
        raise_on_invalid=True,
    )
    assert CONFIG["execute"]["execute_notebooks"] == "off"  # quoted: unquoted `off` is YAML's False
    assert sphinx["nb_execution_mode"] == "off"  # Sphinx never executes; build_book.py does
    assert sphinx["external_toc_exclude_missing"] is True  # only_build_toc_files
    assert not sphinx.get("intersphinx_mapping"), "intersphinx fetches over the network"
    theme = sphinx["html_theme_options"]
    assert theme["repository_url"] == colorlab.REPOSITORY_URL
    assert theme["repository_branch"] == "main"
    assert theme["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert theme["launch_buttons"]["binderhub_url"] == "https://mybinder.org"


# --- chapter conventions and clean sources --------------------------------------------------


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_follows_the_chapter_convention(notebook):
    cells = nbformat.read(notebook, as_version=4).cells
    title, parameters, setup = cells[:3]

    assert title.cell_type == "markdown" and title.source.startswith("# ")
    path_in_repo = notebook.relative_to(ROOT).as_posix()
    assert f"({COLAB}/{path_in_repo})" in title.source, "the Colab badge must open this very file"

    tagged = [cell for cell in cells if "parameters" in cell.metadata.get("tags", [])]
    assert tagged == [parameters], "cell 2, and only cell 2, is tagged `parameters`"
    defaults = _parameter_defaults(parameters)
    assert REQUIRED_PARAMETERS <= set(defaults), f"missing {REQUIRED_PARAMETERS - set(defaults)}"
    assert defaults["device"] == ("str", "auto") and defaults["smoke"] == ("bool", False)
    for name, (declared, default) in defaults.items():  # papermill --help-notebook shows these types
        assert declared == type(default).__name__, f"{name}: annotate it `{name}: {type(default).__name__} = ...`"

    assert setup.cell_type == "code"
    assert '"google.colab" in sys.modules' in setup.source
    assert re.search(r"^from colorlab import|^import colorlab", setup.source, re.MULTILINE)


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_setup_cell_installs_the_pinned_release_in_colab_and_checks_the_parameters_first(notebook):
    setup = nbformat.read(notebook, as_version=4).cells[2]
    lines = setup.source.splitlines()
    install = f'    %pip install -q "{colorlab.DISTRIBUTION}=={colorlab.__version__}"'
    assert install in lines, f"the Colab install line must be: {install.strip()}"
    assert any(line.startswith("print(installed())") for line in lines)  # one line saying what was installed
    check = lines.index("check_parameters(globals())  # a mistyped parameter stops the chapter here, "
                        "before any download or training")
    before = {line.split("  #")[0] for line in lines[:check] if line and not line.startswith("#")}
    assert before <= {"import subprocess", "import sys", 'if "google.colab" in sys.modules:', install,
                      "from colorlab.book import check_parameters, installed", "print(installed())"}, \
        "nothing but the install may run before check_parameters"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_papermill_reads_every_parameter_with_its_type(notebook):
    parameters = nbformat.read(notebook, as_version=4).cells[1]
    inspected = papermill.inspect_notebook(str(notebook))
    declared = _parameter_defaults(parameters)
    assert set(inspected) == set(declared), "papermill could not parse a line (no '=' in parameter comments)"
    assert {name: info["inferred_type_name"] for name, info in inspected.items()} == \
        {name: declared_type for name, (declared_type, _) in declared.items()}


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_committed_notebook_has_no_outputs(notebook):
    for index, cell in enumerate(_code_cells(notebook)):
        assert cell.outputs == [] and cell.execution_count is None, f"code cell {index}: clear outputs"
        assert "injected-parameters" not in cell.metadata.get("tags", []), "a papermill output was committed"


@pytest.mark.parametrize("notebook", NOTEBOOKS, ids=_ids(NOTEBOOKS))
def test_notebook_imports_colorlab_instead_of_reimplementing_it(notebook):
    for index, cell in enumerate(_code_cells(notebook)):
        if "nbgrader" in cell.metadata:
            continue
        for pattern, problem in FORBIDDEN_CODE.items():
            assert not re.search(pattern, cell.source, re.IGNORECASE), f"code cell {index} {problem}"


# --- execution -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def kernel():
    build_book.check_kernel()


def test_kernel_check_rejects_a_kernel_from_another_environment(tmp_path, monkeypatch):
    spec = tmp_path / "kernels" / "python3" / "kernel.json"
    spec.parent.mkdir(parents=True)
    stale = {"argv": ["/deleted/venv/bin/python", "-m", "ipykernel_launcher"], "display_name": "old",
             "language": "python"}
    spec.write_text(json.dumps(stale))
    monkeypatch.setenv("JUPYTER_PATH", str(tmp_path))  # searched before every other kernel folder
    with pytest.raises(SystemExit, match="cannot import colorlab"):
        build_book.check_kernel()


def _ran_with_smoke_parameters(executed: Path) -> None:
    assert build_book.error_outputs(executed) == []
    cells = nbformat.read(executed, as_version=4).cells
    injected = [cell for cell in cells if "injected-parameters" in cell.metadata.get("tags", [])]
    assert len(injected) == 1 and "size = 64" in injected[0].source  # the smoke values reached the kernel


def test_the_template_runs_with_smoke_parameters(tmp_path, kernel):
    """The chapters themselves run once, in `test_build_writes_html_with_the_figures` (the CI's time budget)."""
    executed = tmp_path / TEMPLATE.name
    build_book.execute_chapter(TEMPLATE, executed, build_book.SMOKE_PARAMETERS)
    _ran_with_smoke_parameters(executed)


def test_a_bad_parameter_makes_the_chapter_fail(tmp_path, kernel):
    with pytest.raises(PapermillExecutionError) as failure:
        build_book.execute_chapter(STUB, tmp_path / STUB.name, {**build_book.SMOKE_PARAMETERS, "size": -7})
    assert failure.value.ename == "ParameterError" and "size=-7" in failure.value.evalue


def test_smoke_false_from_the_command_line_stops_the_chapter_in_its_setup_cell(tmp_path, kernel):
    """`-p smoke false` hands the chapter the string 'false': refused with the right spelling, before any work."""
    parameters = {**build_book.SMOKE_PARAMETERS, "smoke": build_book.parse_value("false")}
    with pytest.raises(PapermillExecutionError) as failure:
        build_book.execute_chapter(STUB, tmp_path / STUB.name, parameters)
    error = failure.value
    assert error.ename == "ParameterError"
    assert "smoke='false'" in error.evalue and "-p smoke False" in error.evalue
    cells = nbformat.read(tmp_path / STUB.name, as_version=4).cells
    [failed] = [cell for cell in cells if any(out.output_type == "error" for out in cell.get("outputs", []))]
    assert "check_parameters(globals())" in failed.source  # the set-up cell: nothing ran after the parameters
    assert error.exec_count == 3  # parameters, papermill's injected values, then the set-up cell
    assert error.traceback == [f"ParameterError: {error.evalue}"]  # one line, no traceback


def test_build_names_the_failing_chapter_and_skips_the_html(tmp_path, capsys, kernel):
    status = build_book.main(["--smoke", "-p", "size", "-7", "--path-output", str(tmp_path)])

    assert status == 1
    assert "book/01_lab_colour.ipynb: cell" in capsys.readouterr().err
    assert not (tmp_path / "_build" / "html").exists()


def test_build_rejects_a_parameter_no_chapter_declares(tmp_path, capsys):
    assert build_book.main(["-p", "sizee", "64", "--path-output", str(tmp_path)]) == 2
    assert "sizee" in capsys.readouterr().err


# Spellings where a naive parser and papermill's CLI part ways: case, underscores, spaces, floats,
# special floats, literals that papermill keeps as text.
COMMAND_LINE_TEXTS = ["64", "-3", "+7", " 64 ", "1_000", "0.5", "1e-3", "nan", "-inf", "0x10", "True", "False",
                      "None", "true", "false", "FALSE", "none", "cuda", "/x/y", "[1, 2]", "'quoted'", "{}", ""]


@pytest.mark.parametrize("text", COMMAND_LINE_TEXTS)
def test_command_line_values_are_parsed_exactly_like_papermills_cli(text, monkeypatch, tmp_path):
    from click.testing import CliRunner
    from papermill import cli

    received = {}
    monkeypatch.setattr(cli, "execute_notebook", lambda **kwargs: received.update(kwargs["parameters"]))
    result = CliRunner().invoke(cli.papermill, [str(tmp_path / "in.ipynb"), str(tmp_path / "out.ipynb"),
                                                "-p", "value", text])
    assert result.exit_code == 0, result.output
    ours = build_book.parse_value(text)
    assert type(ours) is type(received["value"]) and repr(ours) == repr(received["value"])  # repr: nan == nan


@pytest.mark.slow
def test_build_writes_html_with_the_figures(tmp_path, kernel):
    """Every chapter of the toc executed with the smoke parameters (no error output), then the HTML built."""
    assert build_book.main(["--smoke", "--path-output", str(tmp_path)]) == 0

    html = tmp_path / "_build" / "html"
    assert (html / "index.html").is_file()
    executed = build_book.toc_chapters(tmp_path / "_build" / "src")
    assert len(executed) == len(CHAPTERS)
    for chapter in executed:
        _ran_with_smoke_parameters(chapter)
        page = (html / chapter.relative_to(tmp_path / "_build" / "src")).with_suffix(".html").read_text()
        figures = sum(
            "image/png" in output.get("data", {})
            for cell in _code_cells(chapter)
            for output in cell.outputs
        )
        assert len(re.findall(r'<img [^>]*src="(?:\.\./)+_images/[^"]+\.png"', page)) >= figures
        assert "ipythontb" not in page  # an error output would render as a traceback
    stub_page = (html / "book" / "01_lab_colour.html").read_text()
    assert re.search(r'<img [^>]*src="\.\./_images/[^"]+\.png"', stub_page)
    assert f"{COLAB}/book/01_lab_colour.ipynb" in stub_page  # the launch button
