"""Published data: the evaluation photos as a versioned, checksummed release asset.

The chapters evaluate the published models on held-out photos that no reader has beside the
repository (../shared/data). They are published as one zip per version, listed in the registry
`published_data.json` next to this module (name, file, sha256, bytes, the release that holds
it): 128 COCO val2017 photos (Flickr Creative Commons licences, COCO terms of use) and 12 old
photographs (from microsoft/Bringing-Old-Photos-Back-to-Life, MIT), each with its licence and
attribution row of the shared set's MANIFEST.csv inside the zip. `tools/pack_eval_photos.py`
makes the zip, byte for byte the same every time.

`eval_photos_dir()` is where every evaluation looks: ../shared/data (or $COLORLAB_SHARED_DATA)
when present, else the unpacked asset in the cache, else (with `download=True`) the asset,
downloaded by `colorlab.hub`'s downloader (progress bar, sha256 checked, renamed into place
only when complete) and unpacked into ``$COLORLAB_CACHE/data/<name>``; offline, None with one
line saying why. `colorlab data fetch eval` does the same from the command line. The folder has
the layout of ../shared/data: ``photos/val/``, ``old-photos/``, ``MANIFEST.csv``.
$COLORLAB_DATA_REGISTRY names another registry of the same format (a course's own, a test's);
files are fetched from $COLORLAB_RELEASE_URL as the models are (`colorlab.hub`).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from . import hub
from .data import CACHE_DIR, shared_data_dir

REGISTRY_FILE = Path(os.environ.get("COLORLAB_DATA_REGISTRY") or Path(__file__).with_name("published_data.json"))
DATA_CACHE = CACHE_DIR / "data"
EVAL = "eval"  # the evaluation photos' entry
COMPLETE = ".complete"  # written last into an unpacked folder: the sha256 of the zip it came from


class DataAssetError(RuntimeError):
    """A data asset cannot be had: unknown name, damaged file, failed download (one line, with the way out)."""


@dataclass(frozen=True)
class DataAsset:
    """One registry entry; `url`, `bytes`, `sha256` and `name` are what `hub`'s downloader needs."""

    name: str
    file: str
    sha256: str
    bytes: int
    url: str
    info: dict = field(default_factory=dict, compare=False)

    @property
    def folder(self) -> Path:
        """Where the asset is unpacked in the cache."""
        return DATA_CACHE / PurePosixPath(self.file).stem


def _load_registry() -> dict[str, DataAsset]:
    registry = json.loads(REGISTRY_FILE.read_text())
    base = f"{hub.RELEASE_URL.rstrip('/')}/{registry['release']}"
    return {entry["name"]: DataAsset(entry["name"], entry["file"], entry["sha256"], entry["bytes"],
                                     f"{base}/{entry['file']}", entry) for entry in registry["data"]}


DATASETS = _load_registry()


def get(name: str) -> DataAsset:
    if name not in DATASETS:
        raise DataAssetError(f"no published data named {name!r}; the published data: {', '.join(DATASETS)}")
    return DATASETS[name]


def check_file(path: Path, sha256: str) -> Path:
    """`path` if it exists and has `sha256`; else DataAssetError naming it."""
    if not path.is_file():
        raise DataAssetError(f"{path} does not exist")
    found = hub.sha256_of(path)
    if found != sha256:
        raise DataAssetError(f"{path} has sha256 {found[:12]}..., expected {sha256[:12]}... "
                             "(a damaged file or another version)")
    return path


def unpacked(name: str = EVAL) -> Path | None:
    """The asset's folder in the cache when it was unpacked completely from the registered zip, else None."""
    asset = get(name)
    marker = asset.folder / COMPLETE
    return asset.folder if marker.is_file() and marker.read_text().strip() == asset.sha256 else None


def fetch(name: str = EVAL) -> Path:
    """The unpacked folder of asset `name` in the cache: there already, else downloaded, checked and unpacked."""
    asset = get(name)
    if unpacked(name):
        return asset.folder
    archive = DATA_CACHE / asset.file
    if not (archive.is_file() and archive.stat().st_size == asset.bytes and hub.sha256_of(archive) == asset.sha256):
        try:
            hub._download(asset, archive)  # one downloader for models and data: checked, atomic, with a bar
        except hub.PublishedModelError as err:
            problem = str(err).split("; either download")[0].removeprefix(f"published model {name!r}: ")
            raise DataAssetError(f"data {name!r}: {' '.join(problem.split())}; put {asset.file} into {DATA_CACHE} "
                                 f"by hand (from {asset.url}) and run `colorlab data fetch {name}` again") from None
    _unpack(archive, asset)
    archive.unlink()  # the photos are kept unpacked; the zip would only double the space
    return asset.folder


def _unpack(archive: Path, asset: DataAsset) -> None:
    """Unpack into a temporary folder beside the target, then rename it: never half a folder of photos."""
    tmp = asset.folder.with_name(f".{asset.folder.name}.part-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        with zipfile.ZipFile(archive) as zf:
            for member in zf.infolist():
                parts = PurePosixPath(member.filename).parts
                if member.filename.startswith("/") or ".." in parts or parts[0] != asset.folder.name:
                    raise DataAssetError(f"{archive}: refusing the member {member.filename!r} (outside the folder)")
            zf.extractall(tmp)
        inner = tmp / asset.folder.name  # the zip holds one top folder named like the asset's file
        (inner / COMPLETE).write_text(asset.sha256)
        shutil.rmtree(asset.folder, ignore_errors=True)
        os.replace(inner, asset.folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def eval_photos_dir(download: bool = True) -> Path | None:
    """The folder of the evaluation photos (``photos/val``, ``old-photos``, ``MANIFEST.csv``), or None.

    ../shared/data (or $COLORLAB_SHARED_DATA) when present, else the unpacked release asset in the
    cache, else, with `download`, the asset fetched now (one line says so). None when they cannot be
    had, with one line saying why: the caller then evaluates on its own validation images.
    """
    shared = shared_data_dir()
    if shared is not None and (shared / "photos" / "val").is_dir():
        return shared
    if unpacked(EVAL) or not download:
        return unpacked(EVAL)
    try:
        folder = fetch(EVAL)
    except DataAssetError as err:
        print(f"evaluation photos: not here and not downloaded ({' '.join(str(err).split())})")
        return None
    print(f"evaluation photos: downloaded {get(EVAL).file} (sha256 checked) and unpacked into {folder}")
    return folder


def table() -> list[str]:
    """`colorlab data`: one line per data asset and where it is."""
    rows = []
    for name, asset in DATASETS.items():
        where = unpacked(name) or f"not here: colorlab data fetch {name}"
        rows.append(f"{name:<6} {asset.file} ({asset.bytes / 1e6:.1f} MB): {asset.info.get('what', '')}; {where}")
    shared = shared_data_dir()
    return rows + ([f"../shared/data is here ({shared}): evaluations use it first"] if shared else [])


def add_cli(subparsers) -> None:
    """Register `colorlab data` (list) and `colorlab data fetch NAME`; sets `func(args) -> exit code`."""
    parser = subparsers.add_parser("data", help="list the published data, or fetch one into the cache",
                                   description="The published data assets (the evaluation photos) and where they are; "
                                               "`fetch NAME` downloads one, checks its sha256 and unpacks it.")
    parser.add_argument("action", nargs="?", choices=["fetch"], metavar="fetch")
    parser.add_argument("name", nargs="?", choices=list(DATASETS))
    parser.set_defaults(func=_command)


def _command(args) -> int:
    if args.action is None:
        print("\n".join(table()))
    elif args.name is None:
        raise DataAssetError(f"`colorlab data fetch` needs a name: {', '.join(DATASETS)}")
    else:
        print(fetch(args.name))
    return 0
