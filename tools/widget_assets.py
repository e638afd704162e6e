"""The runtime files of the book's "colorize your own photo" widget (book/_static/colorize/).

Sphinx copies the widget's own code (widget.js, worker.js, colorize.js, widget.css) into
`_build/html/_static/colorize/`. What it cannot copy is added here, after the build:

- `ort/`: onnxruntime-web's WebAssembly build, from `node_modules` (npm, pinned by package.json and
  package-lock.json; `make book` runs `npm ci`): never committed, never loaded from a CDN.
- `model/`: the published default model (`colorlab.hub.DEFAULT`, from ../shared/models or the download)
  exported to ONNX int8 with its parity check (`colorlab.export`), and `model.json` describing it.
  Without a published model the widget says so in one line.
- `old-photos/`: the shared old photographs, when ../shared/data is here, for the widget's picker.

    python tools/widget_assets.py DIR            # DIR/index.html: the widget alone on a page (browser test, screenshots)
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
WIDGET_SOURCE = REPO_ROOT / "book" / "_static" / "colorize"
ORT_DIST = Path("node_modules") / "onnxruntime-web" / "dist"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
WIDGET_HTML = '<div class="colorlab-widget"></div>\n<script type="module" src="{base}widget.js"></script>'


def copy_onnxruntime(target: Path, root: Path = REPO_ROOT) -> str:
    """onnxruntime-web's wasm files into target/ort; one line saying what happened."""
    dist = root / ORT_DIST
    missing = [name for name in ORT_FILES if not (dist / name).is_file()]
    if missing:
        return f"widget: onnxruntime-web is not in {dist} (run `npm ci`); the widget will say it cannot run"
    (target / "ort").mkdir(parents=True, exist_ok=True)
    for name in ORT_FILES:
        shutil.copy2(dist / name, target / "ort" / name)
    version = json.loads((dist.parent / "package.json").read_text(encoding="utf-8"))["version"]
    return f"widget: onnxruntime-web {version} copied into {target / 'ort'}"


def export_model(target: Path, cache: Path, name: str | None = None, variant: str | None = None,
                 checkpoint: Path | None = None) -> str:
    """The published model `name` (default hub.DEFAULT), or a `checkpoint` file, as ONNX into target/model.

    target/model/model.json describes it for the widget. The export (a minute on 2 CPU cores, for the
    parity check) is kept in `cache` and reused while the source file's sha256 is the same.
    """
    from colorlab import export, hub

    variant = variant or export.SMALL_VARIANT
    if checkpoint is None:
        name = name or hub.DEFAULT
        sha256 = hub.get(name).sha256
    else:
        name, sha256 = checkpoint.stem, hub.sha256_of(checkpoint)
    onnx = cache / f"{name}.{variant}.onnx"
    facts_file = export.sidecar(onnx)
    facts = json.loads(facts_file.read_text(encoding="utf-8")) if facts_file.is_file() and onnx.is_file() else {}
    if facts.get("source_sha256") != sha256:
        try:
            checkpoint = checkpoint or hub.fetch_pretrained(name)
        except hub.PublishedModelError as err:
            return f"widget: no model ({' '.join(str(err).split())}); the widget will say so"
        from colorlab.checkpoint import load_generator

        generator, spec = load_generator(checkpoint)
        facts = export.export_onnx(generator, spec, onnx, variant, name=name)
        facts["source_sha256"] = sha256
        facts_file.write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    (target / "model").mkdir(parents=True, exist_ok=True)
    shutil.copy2(onnx, target / "model" / onnx.name)
    (target / "model" / "model.json").write_text(json.dumps(facts, indent=1) + "\n", encoding="utf-8")
    return f"widget: {onnx.name} ({facts['bytes'] / 1e6:.1f} MB) in {target / 'model'}"


def copy_old_photos(target: Path) -> str:
    """../shared/data/old-photos into target/old-photos with index.json (the picker's list), when here."""
    from colorlab.data import shared_data_dir

    root = shared_data_dir()
    photos = sorted((root / "old-photos").glob("*.jpg")) if root is not None else []
    if not photos:
        return "widget: no ../shared/data/old-photos here; the widget offers no old photo to pick"
    (target / "old-photos").mkdir(parents=True, exist_ok=True)
    for photo in photos:
        shutil.copy2(photo, target / "old-photos" / photo.name)
    index = [{"file": p.name, "label": "old photo " + p.stem.removeprefix("old-photos_old_").replace("_", " ")}
             for p in photos]
    (target / "old-photos" / "index.json").write_text(json.dumps(index, indent=1) + "\n", encoding="utf-8")
    return f"widget: {len(photos)} old photos in {target / 'old-photos'}"


def add_runtime(target: Path, cache: Path, checkpoint: Path | None = None, variant: str | None = None) -> list[str]:
    """Everything the widget in `target` (a built _static/colorize) needs beside its code; a line each."""
    return [copy_onnxruntime(target), export_model(target, cache, variant=variant, checkpoint=checkpoint),
            copy_old_photos(target)]


def standalone_page(folder: Path, cache: Path, checkpoint: Path | None = None, model: bool = True,
                    variant: str | None = None) -> Path:
    """folder/index.html: the widget alone on a page (its files in folder/colorize), for the browser test.

    `checkpoint` replaces the published default model, `variant` the int8 export; `model=False` leaves the model out.
    """
    target = folder / "colorize"
    shutil.copytree(WIDGET_SOURCE, target, dirs_exist_ok=True)
    lines = add_runtime(target, cache, checkpoint, variant) if model else [copy_onnxruntime(target)]
    for line in lines:
        print(line)
    page = folder / "index.html"
    page.write_text("<!doctype html><html><head><meta charset='utf-8'>"
                    "<meta name='viewport' content='width=device-width, initial-scale=1'>"
                    "<title>colorlab: colorize your own photo</title></head><body style='font-family: sans-serif; "
                    "max-width: 60rem; margin: auto; padding: 1rem'>"
                    "<h2>Colorize your own photo</h2>\n" + WIDGET_HTML.format(base="colorize/") + "\n</body></html>\n",
                    encoding="utf-8")
    return page


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path)
    parser.add_argument("--cache", type=Path, default=REPO_ROOT / "_build" / "widget-model")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO_ROOT))
    print(standalone_page(args.folder, args.cache))
