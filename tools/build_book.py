"""Build the HTML book: execute every chapter with papermill, then render with Jupyter Book.

The committed notebooks carry no outputs (small diffs, no stale results). This script
copies the book to a staging folder, executes the copies there, and renders those, so
every number and figure in the HTML comes from running the code as published.

    python tools/build_book.py                    # the chapters' own defaults (sized for a CPU)
    python tools/build_book.py --smoke            # tiny run that exercises every cell (CI)
    python tools/build_book.py --device cuda -p epochs 20 -p size 256

Output: _build/src (executed copies) and _build/html/index.html under --path-output
(default: the repository root). The landing page's chapter table gets the run time of each
chapter measured by this build. Exit status 1 if a chapter raises, the build warns or a page
loads a script from another host (the book must read offline), 2 for a parameter that no
chapter declares.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import nbformat
import papermill
import yaml
from papermill.exceptions import PapermillExecutionError

from colorlab.assignments import publish_exercises
from colorlab.book import SMOKE_PARAMETERS, declared_parameters, write_install_version  # the grader: the first two

REPO_ROOT = Path(__file__).resolve().parents[1]
BOOK_SOURCES = ("_config.yml", "_toc.yml", "book", "results")  # what the staging folder gets (results: the recorded runs the chapters read)
KERNEL = "python3"


def toc_pages(root: Path = REPO_ROOT) -> list[Path]:
    """Every page listed in `root/_toc.yml`, in reading order, with its real suffix."""
    toc = yaml.safe_load((root / "_toc.yml").read_text(encoding="utf-8"))
    return [_existing_page(root, entry) for entry in [toc["root"], *_toc_entries(toc)]]


def toc_chapters(root: Path = REPO_ROOT) -> list[Path]:
    """The notebooks among the pages: what gets executed."""
    return [page for page in toc_pages(root) if page.suffix == ".ipynb"]


def _toc_entries(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if "file" in node:
            yield node["file"]
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []):
                yield from _toc_entries(child)


def _existing_page(root: Path, entry: str) -> Path:
    stem = root / entry
    for page in (stem, stem.with_suffix(".ipynb"), stem.with_suffix(".md")):
        if page.is_file():
            return page
    raise FileNotFoundError(f"_toc.yml lists {entry!r}, but no {entry}.ipynb or {entry}.md exists")


def parse_value(text: str) -> Any:
    """Command-line text to a Python value exactly as papermill's `-p NAME VALUE` converts it.

    papermill (cli._resolve_type) turns only the spellings 'True', 'False' and 'None' into
    constants, then tries int(), then float(), and otherwise keeps the string: '64' -> 64,
    '1e-3' -> 0.001, but 'false' -> 'false', which the chapters' check_parameters refuses
    where a bool is declared. Both commands therefore hand a chapter the same values.
    """
    constants = {"True": True, "False": False, "None": None}
    if text in constants:
        return constants[text]
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    return text


def execute_chapter(notebook: Path, output: Path, parameters: dict[str, Any]) -> None:
    """Run `notebook` into `output` (may be the same file), passing only the parameters it declares.

    Passing undeclared names would make papermill warn and the chapter silently ignore them.
    Raises PapermillExecutionError naming the failing cell if the chapter raises.
    """
    declared = declared_parameters(notebook)
    papermill.execute_notebook(
        str(notebook),
        str(output),
        parameters={name: value for name, value in parameters.items() if name in declared},
        kernel_name=KERNEL,
        cwd=str(notebook.parent),
        progress_bar=False,
    )


def error_outputs(notebook: Path) -> list[str]:
    """'cell N: Name: message' for every error output, including cells tagged raises-exception."""
    nb = nbformat.read(notebook, as_version=4)
    return [
        f"cell {index}: {output.get('ename')}: {output.get('evalue')}"
        for index, cell in enumerate(nb.cells)
        for output in cell.get("outputs", [])
        if output.get("output_type") == "error"
    ]


def check_kernel() -> None:
    """Fail early, with the fix, if the `python3` kernel is missing or cannot import colorlab.

    A kernel spec left behind by another environment is the usual way a fresh checkout
    executes chapters with the wrong interpreter.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel:
        sys.exit(f"No '{KERNEL}' Jupyter kernel: run `{sys.executable} -m pip install ipykernel`.")
    interpreter = spec.argv[0]
    if interpreter in {"python", f"python{sys.version_info[0]}", "python{}.{}".format(*sys.version_info)}:
        interpreter = sys.executable  # jupyter_client launches these names as the current interpreter
    try:
        probe = subprocess.run([interpreter, "-c", "import colorlab"], capture_output=True)
        imports_colorlab = probe.returncode == 0
    except OSError:  # e.g. the interpreter of a deleted virtual environment
        imports_colorlab = False
    if not imports_colorlab:
        sys.exit(
            f"The '{KERNEL}' kernel runs {interpreter}, which cannot import colorlab. "
            f"Point it at this environment: `{sys.executable} -m ipykernel install --user`."
        )


def stage(staging: Path, root: Path = REPO_ROOT) -> None:
    """Fresh copy of the book sources in `staging`, so executing never touches the committed files.

    Each chapter's Colab install line is written with this library's version: the published
    notebook installs the release that produced its outputs.
    """
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    for name in BOOK_SOURCES:
        source = root / name
        if source.is_dir():
            ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "runs")  # runs: local checkpoints
            shutil.copytree(source, staging / name, ignore=ignore)
        else:
            shutil.copy2(source, staging / name)
    for chapter in (staging / "book").glob("*.ipynb"):  # the Colab cells install the library that runs this build
        write_install_version(chapter)


def execute_chapters(
    chapters: Sequence[Path], parameters: dict[str, Any], root: Path, seconds: dict[Path, float] | None = None
) -> list[str]:
    """Execute each chapter in place; print a progress line each; return one line per failure.

    `seconds`, when given, receives each chapter's wall-clock run time (kernel start included),
    for the landing page's table.
    """
    failures = []
    for number, chapter in enumerate(chapters, start=1):
        name = chapter.relative_to(root).as_posix()
        label = f"[{number}/{len(chapters)}] {name}"
        print(f"{label}: running", flush=True)  # a line of its own: the kernel may print too
        start = time.perf_counter()
        try:
            execute_chapter(chapter, chapter, parameters)
            problem = "; ".join(error_outputs(chapter))
        except PapermillExecutionError as error:
            problem = f"cell {error.cell_index}: {error.ename}: {error.evalue}"
        elapsed = time.perf_counter() - start
        if seconds is not None:
            seconds[chapter] = elapsed
        print(f"{label}: {'FAILED' if problem else 'ok'} in {elapsed:.1f} s", flush=True)
        if problem:
            failures.append(f"{name}: {problem}")
    return failures


def build_html(source: Path, path_output: Path) -> int:
    """Render with Jupyter Book; warnings are errors. The HTML lands in path_output/_build/html."""
    # Run the CLI with this interpreter (there is no `python -m jupyter_book`).
    command = [sys.executable, "-c", "import sys; from jupyter_book.cli.main import main; sys.exit(main())"]
    arguments = ["build", str(source), "--path-output", str(path_output), "-W", "--keep-going", "--all"]
    return subprocess.run(command + arguments).returncode


RUNTIME_NOTE = "<!-- build_book.py: run times -->"  # the landing page's line that names the measuring run


def run_device(parameters: Mapping[str, Any]) -> str:
    """'cpu', 'cuda' or 'mps': where the chapters ran, chosen as the chapters choose (colorlab.runtime)."""
    import torch

    from colorlab.runtime import pick_device

    device = str(parameters.get("device", "auto"))
    return (pick_device() if device == "auto" else torch.device(device)).type


def describe_machine(device: str) -> str:
    """The processor that ran the chapters, for the note under the run-time table."""
    if device == "cuda":
        import torch

        return f"an {torch.cuda.get_device_name(0)} GPU" if torch.cuda.is_available() else "a CUDA GPU"
    if device == "mps":
        return "an Apple GPU (MPS)"
    return f"a {os.cpu_count()}-core {platform.machine()} CPU"


def format_seconds(seconds: float) -> str:
    """'28 s' or '2.1 min': whole seconds up to a minute and a half, then minutes (readers plan in minutes)."""
    return f"{seconds:.0f} s" if seconds < 90 else f"{seconds / 60:.1f} min"


def write_runtime_table(
    landing: Path, seconds: Mapping[Path, float], device: str, parameters: Mapping[str, Any]
) -> None:
    """Put this build's run time of every chapter into the landing page's table, in place.

    Each chapter has a row whose first cell links to it (`[title](01_x.ipynb)`); the CPU column
    gets the time of a CPU build, the GPU column that of a GPU build (the other keeps what the
    page says). The line `RUNTIME_NOTE` becomes a sentence naming the machine, date and
    parameters. Raises ValueError naming a chapter without a row, or a page without the note.
    """
    text = landing.read_text(encoding="utf-8")
    if RUNTIME_NOTE not in text:
        raise ValueError(f"{landing.name} has no line {RUNTIME_NOTE!r} for the run-time note")
    column = 1 if device == "cpu" else 2  # | chapter | CPU | GPU | ...
    for chapter, elapsed in seconds.items():
        link = re.escape(f"]({chapter.relative_to(landing.parent).as_posix()})")
        row = re.compile(rf"^\|[^|\n]*{link}[^|\n]*\|.*$", re.MULTILINE)
        match = row.search(text)
        if match is None:
            raise ValueError(f"{landing.name}'s chapter table has no row for {chapter.name}")
        cells = match.group(0).split("|")
        cells[column + 1] = f" {format_seconds(elapsed)} "
        text = text[: match.start()] + "|".join(cells) + text[match.end() :]
    settings = ", ".join(f"`{name}={value!r}`" for name, value in parameters.items()) or "the chapters' own defaults"
    note = (
        f"Run times: measured by `tools/build_book.py` when it built this website, on "
        f"{describe_machine(device)}, on {datetime.date.today().isoformat()}, with {settings} "
        "(wall-clock time to execute the notebook, kernel start included)."
    )
    landing.write_text(text.replace(RUNTIME_NOTE, note), encoding="utf-8")


class _ExternalLoads(HTMLParser):
    """Collects the scripts and stylesheets a page loads from another host."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        url = attributes.get("src") if tag == "script" else None
        if tag == "link" and "stylesheet" in (attributes.get("rel") or "").split():
            url = attributes.get("href")
        if url and urlsplit(url).netloc:  # https://host/..., //host/...: fetched over the network
            self.urls.append(url)


def external_loads(html_dir: Path) -> list[str]:
    """'page: url' for every script or stylesheet that a page under html_dir loads from another host."""
    found = []
    for page in sorted(html_dir.rglob("*.html")):
        parser = _ExternalLoads()
        parser.feed(page.read_text(encoding="utf-8"))
        found += [f"{page.relative_to(html_dir).as_posix()}: {url}" for url in parser.urls]
    return found


def add_widget_runtime(target: Path, cache: Path) -> list[str]:
    """onnxruntime-web, the exported default model and the old photos beside the widget (tools/widget_assets.py)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("widget_assets", Path(__file__).with_name("widget_assets.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.add_runtime(target, cache)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--smoke", action="store_true", help=f"use the smoke parameters {SMOKE_PARAMETERS}")
    parser.add_argument(
        "-p",
        "--parameter",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="override one parameter in every chapter that declares it (repeatable)",
    )
    parser.add_argument("--device", help="shorthand for -p device DEVICE (e.g. cuda, cpu)")
    parser.add_argument(
        "--path-output",
        type=Path,
        default=REPO_ROOT,
        help="folder that receives _build/ (default: the repository root)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    parameters = dict(SMOKE_PARAMETERS) if args.smoke else {}
    parameters.update({name: parse_value(value) for name, value in args.parameter})
    if args.device:
        parameters["device"] = args.device

    build_dir = args.path_output.resolve() / "_build"
    staging = build_dir / "src"
    stage(staging)
    chapters = toc_chapters(staging)
    declared = set().union(*(declared_parameters(chapter) for chapter in chapters))
    unknown = sorted({name for name, _ in args.parameter} - declared)
    if unknown:
        print(f"No chapter declares the parameter(s) {', '.join(unknown)}.", file=sys.stderr)
        return 2

    check_kernel()
    print(f"Executing {len(chapters)} chapter(s) in {staging} with {parameters or 'their own defaults'}")
    seconds: dict[Path, float] = {}
    failures = execute_chapters(chapters, parameters, staging, seconds)
    if failures:
        print("\nChapters that failed (the HTML was not built):", *failures, sep="\n  ", file=sys.stderr)
        return 1
    try:
        write_runtime_table(toc_pages(staging)[0], seconds, run_device(parameters), parameters)
    except ValueError as error:
        print(f"\nThe run-time table: {error}", file=sys.stderr)
        return 1

    publish_exercises(chapters)  # graded exercises as students see them, solutions folded, no hidden tests
    if build_html(staging, args.path_output.resolve()) != 0:
        print("\nJupyter Book reported warnings or errors (see above).", file=sys.stderr)
        return 1
    remote = external_loads(build_dir / "html")
    if remote:
        print("\nPages load scripts or styles from other hosts (no offline reading):", *remote, sep="\n  ", file=sys.stderr)
        return 1
    for line in add_widget_runtime(build_dir / "html" / "_static" / "colorize", build_dir / "widget-model"):
        print(line)
    print(f"\nThe book is at {build_dir / 'html' / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
