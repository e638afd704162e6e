"""The ``colorlab assignments`` command: ``build`` the student versions, ``grade`` submissions.

The work is done by `colorlab.assignments` (building) and `colorlab.grading` (grading); this
module only turns command lines into calls and reports into lines of text. Both need the
``book`` extra (nbformat, jupyter_client, IPython), which a plain ``pip install colorlab-book`` lacks: they
are imported when a command runs, not when the ``colorlab`` command builds its parser, so that
``colorlab colorize`` works without them and ``colorlab assignments`` says in one line what to install.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from .assignments import EXERCISE_TIMEOUT, SUBMISSION_TIMEOUT, MAX_OUTPUT_BYTES, book_notebooks, build_assignments, graded_chapters
from .book import find_book

BOOK_EXTRA = ("nbformat", "jupyter_client", "IPython")  # what building and grading import: colorlab's `book` extra


class MissingExtraError(ImportError):
    """A package of the ``book`` extra is not installed; the message says how to install it."""


def _needs_book_extra(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """`command`, with a missing package of the book extra turned into one line that names the fix."""
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except ModuleNotFoundError as err:
            if (err.name or "").split(".")[0] not in BOOK_EXTRA:
                raise
            raise MissingExtraError(f"{err.name} is not installed; `pip install \"colorlab-book[book]\"` adds what "
                                    "building and grading assignments need") from None
    return run


def _chapter_path(chapter: str, book: Path | None) -> Path:
    """A notebook path, or a name prefix of one of the book's notebooks (``05`` -> ``book/05_....ipynb``)."""
    if Path(chapter).exists():
        return Path(chapter)
    matches = [path for path in book_notebooks(book) if path.name.startswith(chapter)]
    if len(matches) != 1:
        raise FileNotFoundError(f"'{chapter}' matches {len(matches)} notebooks in {find_book(book)}, expected one")
    return matches[0]


def _build_command(args: argparse.Namespace) -> int:
    notebooks = [_chapter_path(chapter, args.book) for chapter in args.chapters] or graded_chapters(args.book)
    if not notebooks:
        raise FileNotFoundError(f"no notebook with graded exercises in {find_book(args.book)}")
    for path in build_assignments(notebooks, args.out, badge_url=args.badge_url, check=args.check):
        print(path)
    return 0


def _grade_command(args: argparse.Namespace) -> int:
    from .grading import grade, grade_folder

    options = dict(timeout=args.timeout, exercise_timeout=args.exercise_timeout, max_output_bytes=args.max_output,
                   submission_timeout=args.submission_timeout, book_dir=args.book)
    if args.submission.is_dir():
        csv_path = args.csv or args.submission / "grades.csv"
        for report in grade_folder(args.submission, csv_path, args.source, **options):
            print(f"{report.submission}: {report.points:g}/{report.max_points:g}")
        print(f"wrote {csv_path}")
        return 0
    report = grade(args.submission, args.source, **options)
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
    build.add_argument(
        "--badge-url",
        help="point launch badges here instead of removing them; may use {assignment} and {notebook}",
    )
    build.add_argument(
        "--no-check", dest="check", action="store_false",
        help="skip the check that no solution or hidden test survives in the release",
    )
    build.set_defaults(func=_needs_book_extra(_build_command))

    grade_parser = commands.add_parser("grade", help="run submissions against the hidden tests and score them")
    grade_parser.add_argument("submission", type=Path, help="a student's notebook, or a folder of submissions")
    grade_parser.add_argument(
        "--source", type=Path, help="teacher notebook (default: the one with the same file name in book/)"
    )
    grade_parser.add_argument("--json", type=Path, help="one submission: also write the report as JSON here")
    grade_parser.add_argument("--csv", type=Path, help="a folder: the CSV to write (default: FOLDER/grades.csv)")
    grade_parser.add_argument("--timeout", type=int, default=600, help="seconds allowed per cell of the chapter")
    grade_parser.add_argument(
        "--exercise-timeout", type=int, default=EXERCISE_TIMEOUT,
        help="seconds allowed per solution, tests or added cell",
    )
    grade_parser.add_argument(
        "--submission-timeout", type=int, default=SUBMISSION_TIMEOUT,
        help="seconds allowed for a whole submission: every cell, rerun and call of the tests",
    )
    grade_parser.add_argument(
        "--max-output", type=int, default=MAX_OUTPUT_BYTES, help="bytes of output kept per cell; the rest is dropped"
    )
    grade_parser.set_defaults(func=_needs_book_extra(_grade_command))
    for command in (build, grade_parser):
        command.add_argument("--book", type=Path, default=None,
                             help="the folder of the book's chapters (default: book/ of the repository around the "
                                  "working directory)")
