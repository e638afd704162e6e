"""Pack the evaluation photos of ../shared/data into the release asset that `colorlab data fetch eval` installs.

    python tools/pack_eval_photos.py --out dist/assets            # writes colorlab-eval-photos-v1.zip, prints its facts
    python tools/pack_eval_photos.py --out dist/assets --register # and writes them into colorlab/published_data.json

The zip holds one folder, laid out like ../shared/data: photos/val/ (COCO val2017) and old-photos/,
with MANIFEST.csv (the shared set's rows for exactly these files: source, original name, licence)
and LICENCES.txt. Only these are redistributable: the training photos (ImageNet sample, BSDS500)
are not, and stay out. The zip is byte for byte reproducible (sorted members, fixed timestamps,
stored uncompressed: JPEGs do not compress), so packing again gives the registered sha256.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
REGISTRY = ROOT / "colorlab" / "published_data.json"
SPLITS = {"val": "COCO val2017: held-out photos the published models never saw",
          "old": "old photographs for the 'colorize old photos' demo"}
TIMESTAMP = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can store: no build time leaks into the bytes
LICENCES = """These photos are redistributed with their licences; MANIFEST.csv gives each file's source,
original name and licence.

photos/val/: the first 128 photos of COCO val2017 (https://cocodataset.org), each under its Flickr
Creative Commons licence, used under the COCO terms of use (Lin et al. 2014).
old-photos/: historical photographs from the test images of microsoft/Bringing-Old-Photos-Back-to-Life
(https://github.com/microsoft/Bringing-Old-Photos-Back-to-Life, MIT licence).
Every photo was resized (short side 256 px; old photos long side <= 768 px) and saved as JPEG.
"""


def members(shared: Path) -> dict[str, bytes]:
    """name inside the folder -> bytes: the photos of SPLITS, their MANIFEST.csv rows and LICENCES.txt."""
    lines = (shared / "MANIFEST.csv").read_text(encoding="utf-8").splitlines(keepends=True)
    rows = [line for line in lines[1:] if line.split(",", 1)[0] in SPLITS]
    files = {line.split(",", 2)[1]: line for line in rows}
    missing = [name for name in files if not (shared / name).is_file()]
    if missing:
        sys.exit(f"pack_eval_photos: {len(missing)} file(s) of MANIFEST.csv are missing, e.g. {missing[0]}")
    out = {name: (shared / name).read_bytes() for name in sorted(files)}
    out["MANIFEST.csv"] = (lines[0] + "".join(rows)).encode("utf-8")
    out["LICENCES.txt"] = LICENCES.encode("utf-8")
    return out


def pack(files: dict[str, bytes], folder: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(files):
            info = zipfile.ZipInfo(f"{folder}/{name}", date_time=TIMESTAMP)
            info.external_attr = 0o644 << 16
            zf.writestr(info, files[name])
    return buffer.getvalue()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shared", type=Path, default=ROOT.parent / "shared" / "data", help="the shared photo set")
    parser.add_argument("--out", type=Path, required=True, help="folder to write the zip into")
    parser.add_argument("--file", default="colorlab-eval-photos-v1.zip", help="the asset's versioned file name")
    parser.add_argument("--register", action="store_true", help="write name, file, sha256 and bytes into the registry")
    args = parser.parse_args(argv)
    files = members(args.shared)
    data = pack(files, Path(args.file).stem)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / args.file).write_bytes(data)
    counts = {split: sum(1 for name in files if name.startswith("photos/val/" if split == "val" else "old-photos/"))
              for split in SPLITS}
    facts = {"name": "eval", "file": args.file, "sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data),
             "what": f"{counts['val']} COCO val2017 photos (photos/val) and {counts['old']} old photos (old-photos), "
                     "with their licences (MANIFEST.csv)",
             "photos": counts}
    print(json.dumps(facts, indent=1))
    if args.register:
        registry = json.loads(REGISTRY.read_text(encoding="utf-8"))
        registry["data"] = [entry for entry in registry["data"] if entry["name"] != facts["name"]] + [facts]
        REGISTRY.write_text(json.dumps(registry, indent=1) + "\n", encoding="utf-8")
        print(f"registered in {REGISTRY.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
