"""Releases as code: bump the version, check a release tag, gather and upload the release's assets.

    python tools/release.py bump 0.3.0        # colorlab/__init__.py and every chapter's Colab install line
    python tools/release.py check-tag v0.3.0  # release.yml's first step: the tag releases the code's version
    python tools/release.py assets --from ../shared/models --data dist/data --out dist/assets   # sha256-checked copies
    python tools/release.py assets --from https://github.com/OWNER/REPO/releases/download --out dist/assets
    python tools/release.py upload-assets --from ../shared/models --data dist/data   # the maintainer's one command

The version scheme: `colorlab.__version__` is the one place the version is written (pyproject.toml
reads it); a release is the tag `v<version>` on the commit that carries it, and release.yml builds,
checks and publishes exactly that. The rule that makes the version change when the library changes
(`version_problem`, run by tests/test_release.py): once `v<version>` is tagged, a commit whose
library differs from the tag's must carry another version. The chapters install
`colorlab-book==<version>` (`colorlab.book.write_install_version`; the book build writes it too).

The model files and the evaluation photos are release assets of their own tags (the registries'
`release`: models-v1, data-v1), versioned apart from the code. A maintainer uploads them once,
from wherever the files are kept, with `upload-assets` (every file checked against its registry's
sha256 first, nothing uploaded if one is wrong; it runs the GitHub CLI `gh`); release.yml then
downloads them (checked again) and attaches them to the code's release as well.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's colorlab, also where another one is installed

from colorlab import DISTRIBUTION, hub  # noqa: E402
from colorlab.book import write_install_version  # noqa: E402
from colorlab.published_data import DATASETS, DataAssetError, check_file  # noqa: E402

INIT = ROOT / "colorlab" / "__init__.py"
VERSION_LINE = re.compile(r'^__version__ = "([^"]+)"$', re.MULTILINE)
RELEASE_VERSION = re.compile(r"^\d+\.\d+\.\d+$")  # what a tag may release: no .dev, no local part


def chapters() -> list[Path]:
    return sorted((ROOT / "book").glob("*.ipynb"))


def code_version() -> str:
    return VERSION_LINE.search(INIT.read_text(encoding="utf-8"))[1]


LIBRARY = ("colorlab", "pyproject.toml")  # what a wheel is made of: a change here needs a new version


def git(root: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)


def version_problem(root: Path = ROOT) -> str | None:
    """The bump rule: None, or one line when `v<version>` is tagged and the library differs from the tag's.

    An untagged version is the next release in the making (any change is part of it); a tagged
    one is published, so a different library under the same version would be two packages with
    one name on the index.
    """
    version = VERSION_LINE.search((root / "colorlab" / "__init__.py").read_text(encoding="utf-8"))[1]
    tag = f"v{version}"
    if git(root, "rev-parse", "--quiet", "--verify", f"refs/tags/{tag}").returncode != 0:
        return None
    changed = git(root, "diff", "--name-only", tag, "--", *LIBRARY).stdout.split()
    if not changed:
        return None
    return (f"the library changed since the release {tag} ({', '.join(changed[:3])}{', ...' if changed[3:] else ''}) "
            f"but still says {version}: run `python tools/release.py bump X.Y.Z` with a higher version")


def bump(version: str) -> None:
    if not RELEASE_VERSION.match(version):
        sys.exit(f"release.py bump: {version!r} is not a release version (MAJOR.MINOR.PATCH)")
    INIT.write_text(VERSION_LINE.sub(f'__version__ = "{version}"', INIT.read_text(encoding="utf-8")), encoding="utf-8")
    changed = [path.name for path in chapters() if write_install_version(path, version)]
    print(f"version {version}: colorlab/__init__.py and {len(changed)} chapter install line(s) written")


def check_tag(tag: str) -> int:
    """0 if `tag` is v<the code's version> and every chapter installs that version; else one line and 1."""
    version = code_version()
    if tag != f"v{version}" or not RELEASE_VERSION.match(version):
        print(f"release.py: tag {tag} does not release the code's version {version} "
              f"(run `python tools/release.py bump X.Y.Z`, commit, tag vX.Y.Z)", file=sys.stderr)
        return 1
    line = f'%pip install -q \\"{DISTRIBUTION}=={version}\\"'  # as it stands in the notebook's JSON
    stale = [path.name for path in chapters() if line not in path.read_text(encoding="utf-8")]
    if stale:
        print(f"release.py: these chapters install another version: {', '.join(stale)}", file=sys.stderr)
        return 1
    print(f"{tag}: releases {DISTRIBUTION} {version}")
    return 0


def registered_assets() -> list:
    """Every file the registries name (models, then data): entries with name, file, sha256, bytes, url, info."""
    return [*hub.MODELS.values(), *DATASETS.values()]


def release_of(entry) -> str:
    """The tag whose release holds `entry`'s file (the registry's `release`)."""
    return entry.url.rsplit("/", 2)[-2]


def gather_assets(source: str, data: Path | None, out: Path) -> int:
    """Put every registered file into `out`, checked against its registry's sha256: copied from the folder
    `source` (data files from `data`, default `source`), or downloaded from `source`/<release>/<file>.
    0 when all are there and right; else one line per problem and 1 (a wrong file is not kept)."""
    out.mkdir(parents=True, exist_ok=True)
    problems = []
    for entry in registered_assets():
        target = out / entry.file
        try:
            if "://" in source:
                hub._download(dataclasses.replace(entry, url=f"{source.rstrip('/')}/{release_of(entry)}/{entry.file}"),
                              target)  # hub's downloader: sha256-checked, renamed into place only when right
            else:
                folder = data if data is not None and entry in DATASETS.values() else Path(source)
                shutil.copy2(check_file(folder / entry.file, entry.sha256), target)
        except (DataAssetError, hub.PublishedModelError) as err:
            problems.append(" ".join(str(err).split("; either download")[0].split()))
            continue
        print(f"{entry.file}: sha256 {entry.sha256[:12]}... ok ({release_of(entry)})")
    for problem in problems:
        print(f"release.py assets: {problem}", file=sys.stderr)
    return 1 if problems else 0


def upload_assets(source: str, data: Path | None, dry_run: bool, staged: Path = ROOT / "dist" / "assets") -> int:
    """Check every registered file (`gather_assets`), then upload each to its release with `gh`; nothing if one is wrong."""
    if gather_assets(source, data, staged) != 0:
        print("release.py upload-assets: nothing uploaded", file=sys.stderr)
        return 1
    for release in sorted({release_of(entry) for entry in registered_assets()}):
        files = [str(staged / entry.file) for entry in registered_assets() if release_of(entry) == release]
        commands = [["gh", "release", "view", release], ["gh", "release", "create", release, "--title", release,
                     "--notes", "Release assets of colorlab-book (see colorlab/published_*.json)"],
                    ["gh", "release", "upload", release, *files, "--clobber"]]
        if dry_run:
            print(*(" ".join(command) for command in commands[1:]), sep="\n")
            continue
        if subprocess.run(commands[0], capture_output=True).returncode != 0:
            subprocess.run(commands[1], check=True)
        subprocess.run(commands[2], check=True)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("bump").add_argument("version")
    commands.add_parser("check-tag").add_argument("tag")
    for command, help in (("assets", "the release's files, checked against the registries' sha256"),
                          ("upload-assets", "check every registered file, then upload each to its release (gh)")):
        assets = commands.add_parser(command, help=help)
        assets.add_argument("--from", dest="source", required=True,
                            help="a folder holding the files (where the maintainer keeps them) or a release base URL")
        assets.add_argument("--data", type=Path, default=None, help="the folder of the data assets (default: --from)")
        if command == "assets":
            assets.add_argument("--out", type=Path, required=True)
        else:
            assets.add_argument("--dry-run", action="store_true", help="check, and print the gh commands only")
    args = parser.parse_args(argv)
    if args.command == "bump":
        bump(args.version)
        return 0
    if args.command == "check-tag":
        return check_tag(args.tag)
    if args.command == "assets":
        return gather_assets(args.source, args.data, args.out)
    return upload_assets(args.source, args.data, args.dry_run)


if __name__ == "__main__":
    sys.exit(main())
