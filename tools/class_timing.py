"""Time `colorlab assignments grade` on a class of N honest submissions of one chapter (docs/grading.md).

Each submission is the teacher's notebook itself (its solutions are right answers), in
``OUT/submitted/studentNN/<chapter>.ipynb``; the answer key is the book's notebook. Prints the load
average before and after, the wall time, and the score of every submission.

    nice -n 5 python tools/class_timing.py 30 /tmp/class30 --chapter 05_baseline.ipynb
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BOOK = Path(__file__).resolve().parents[1] / "book"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("n", type=int, help="submissions in the class")
    parser.add_argument("out", type=Path, help="a folder to (re)create for the class")
    parser.add_argument("--chapter", default="05_baseline.ipynb", help="the book's notebook to grade")
    args = parser.parse_args()
    shutil.rmtree(args.out, ignore_errors=True)
    for index in range(args.n):
        path = args.out / "submitted" / f"student{index:02d}" / args.chapter
        path.parent.mkdir(parents=True)
        shutil.copyfile(BOOK / args.chapter, path)
    print(f"load average before: {os.getloadavg()}", flush=True)
    start = time.monotonic()
    code = subprocess.call([sys.executable, "-m", "colorlab", "assignments", "grade", str(args.out / "submitted"),
                            "--book", str(BOOK)])
    print(f"graded {args.n} submissions in {time.monotonic() - start:.0f} s (exit code {code}); "
          f"load average after: {os.getloadavg()}", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
