"""Published models: load a trained colorizer by name instead of training one for hours.

The registry (`published_models.json`, next to this module) lists each published generator:
its file, sha256, size, generator spec, how and on what it was trained, and its validation
metrics. `fetch_pretrained(name)` finds the file, in this order: an explicit path,
`$COLORLAB_MODELS`, `../shared/models` beside the repository, the user cache
(`~/.cache/colorlab/models`, or `$COLORLAB_CACHE/models`); otherwise it downloads it from its
release URL into the cache. Every file, local or downloaded, is checked against its sha256,
and a download is written to a temporary file that is renamed only once the checksum
matches: a failed or interrupted transfer never leaves a partial model in the cache (the
temporary file of a process killed while downloading is removed by the next download).
A download never hangs and never fills the disk: a Content-Length other than the registry's
size is refused before reading, reading stops at that size, each read waits at most
`TIMEOUT_S`, and the transfer must keep `MIN_RATE_BPS` on average (after `RATE_GRACE_S`) and
end within `DEADLINE_S` plus the time the size takes at that rate.
`export_checkpoint` writes the publishable generator-only file from a training checkpoint.
$COLORLAB_RELEASE_URL serves the release files from elsewhere, $COLORLAB_MODEL_REGISTRY names
another registry (see REGISTRY_FILE).
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm import tqdm

from . import REPOSITORY_URL
from .atomic import remove_stale_temp_files, temp_path
from .checkpoint import check_spec, load_checkpoint, load_generator, save_checkpoint
from .data import CACHE_DIR, SHARED_DIR

# $COLORLAB_MODEL_REGISTRY: another registry of the same format (a class's own models, a test's);
# $COLORLAB_RELEASE_URL: where the releases' files are served instead of GitHub (a mirror, a
# course server, a loopback server in tests): files are fetched from <it>/<release>/<file>.
REGISTRY_FILE = Path(os.environ.get("COLORLAB_MODEL_REGISTRY") or Path(__file__).with_name("published_models.json"))
RELEASE_URL = os.environ.get("COLORLAB_RELEASE_URL") or f"{REPOSITORY_URL}/releases/download"
SHARED_MODELS = SHARED_DIR / "models"  # ../shared/models beside the repository
MODEL_CACHE = CACHE_DIR / "models"
# configs/cpu64.yaml trains on ../shared/data, which only this project's machines have; anywhere else, COCO
TRAIN_COMMAND = ("colorlab experiment --config configs/cpu64.yaml --out results/cpu64 --export-models DIR "
                 "(beside ../shared/data; elsewhere: colorlab train --recipe resnet18 --data coco --size 64)")
TIMEOUT_S = 30  # a stalled connection fails instead of hanging a notebook forever (the limit of one read)
# A server that trickles a byte every 29 s never trips TIMEOUT_S: the transfer as a whole has limits too.
MIN_RATE_BPS = 20_000  # average bytes/s below which a download is abandoned (a slow phone hotspot still passes)
RATE_GRACE_S = 30  # seconds before the rate is judged: connecting and TCP slow start
DEADLINE_S = 60  # the whole transfer: this, plus the model's size at MIN_RATE_BPS


class PublishedModelError(RuntimeError):
    """A published model cannot be had: unknown name, bad file, failed download (one line, with the ways out)."""


@dataclass(frozen=True)
class PublishedModel:
    """One registry entry. `info` keeps the rest of the entry (training facts, validation metrics)."""

    name: str
    file: str
    sha256: str
    bytes: int
    spec: dict
    url: str
    info: dict = field(default_factory=dict, compare=False)

    def describe(self) -> str:
        """One line for readers: what the model is and what it was trained on."""
        epochs = " + ".join(f"{n} {stage}" for stage, n in self.info.get("epochs", {}).items())
        return (f"{self.name}: {self.info.get('what', self.spec['arch'])}, {epochs} epochs on "
                f"{self.info.get('trained_on', 'unknown data')} ({self.info.get('device', '?')}, "
                f"{self.info.get('date', '?')})")

    def metrics(self) -> dict:
        return self.info.get("validation", {}).get("metrics", {})


def _load_registry() -> tuple[dict[str, PublishedModel], list[str], str]:
    registry = json.loads(REGISTRY_FILE.read_text())
    base = f"{RELEASE_URL.rstrip('/')}/{registry['release']}"
    models = {}
    for entry in registry["models"]:
        core = {key: entry[key] for key in ("name", "file", "sha256", "bytes", "spec")}
        models[entry["name"]] = PublishedModel(**core, url=f"{base}/{entry['file']}", info=entry)
    return models, registry["preference"], registry["default"]


# name -> entry; the order in which `colorlab colorize` and the chapters prefer them; the publication's default
MODELS, PREFERENCE, DEFAULT = _load_registry()

# a chapter's training stage -> (the generator's architecture, the training stage its published weights end with)
CHAPTER_STAGES = {"baseline": ("baseline", "gan"), "pretrain": ("resnet18", "pretrain"), "gan": ("resnet18", "gan"),
                  "hints": ("resnet18", "hints")}  # chapter 11: L + colour hints in (colorlab.hints)


def get(name: str) -> PublishedModel:
    if name not in MODELS:
        raise PublishedModelError(f"no published model named {name!r}; the published models are "
                                  f"{', '.join(MODELS)} (see `colorlab models`)")
    return MODELS[name]


def stage_models(stage: str, size: int | None = None) -> list[str]:
    """The published models that stand for a chapter's `stage` (of image size `size`), most preferred first.

    A stage can have several: `resnet18-gan-64-v2` (bounded output, the default) before
    `resnet18-gan-64`, which chapter 7 keeps for its blotch diagnosis.
    """
    if stage not in CHAPTER_STAGES:
        raise ValueError(f"unknown stage {stage!r}; choose one of {', '.join(CHAPTER_STAGES)}")
    arch, trained = CHAPTER_STAGES[stage]
    ordered = PREFERENCE + [name for name in MODELS if name not in PREFERENCE]  # models registered at run time last
    return [name for name in ordered if (MODELS[name].spec["arch"], MODELS[name].info.get("stage")) == (arch, trained)
            and (size is None or MODELS[name].spec["size"] == size)]


def search_dirs() -> list[Path]:
    """Where a model file is looked for without a download, in order."""
    folders = [Path(os.environ["COLORLAB_MODELS"])] if os.environ.get("COLORLAB_MODELS") else []
    return folders + [SHARED_MODELS, MODEL_CACHE]


def local_file(name: str) -> Path | None:
    """The first file of the right name and size in `search_dirs()` (not yet checksummed), or None."""
    model = get(name)
    for folder in search_dirs():
        path = folder / model.file
        if path.is_file() and path.stat().st_size == model.bytes:
            return path
    return None


def is_available(name: str) -> bool:
    """True when the model's file can be had without a download."""
    return local_file(name) is not None


def best_available(size: int | None = None) -> str | None:
    """The most preferred published model (optionally of a given image size) present locally, or None."""
    names = [name for name in PREFERENCE if size is None or MODELS[name].spec["size"] == size]
    return next((name for name in names if is_available(name)), None)


def _ways_out(model: PublishedModel) -> str:
    return (f"either download {model.url} by hand and put it into {MODEL_CACHE} (or a folder named by "
            f"$COLORLAB_MODELS), or train it yourself: {TRAIN_COMMAND}")


def _fail(model: PublishedModel, problem: str) -> PublishedModelError:
    return PublishedModelError(f"published model {model.name!r}: {problem}; {_ways_out(model)}")


_verified: dict[tuple[str, int, int], bool] = {}  # (path, size, mtime) already checksummed in this process


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check(model: PublishedModel, path: Path) -> Path:
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _verified:
        found = sha256_of(path)
        if found != model.sha256:
            raise _fail(model, f"{path} has sha256 {found[:12]}..., expected {model.sha256[:12]}... "
                               "(a damaged file or another version); remove it")
        _verified[key] = True
    return path


def fetch_pretrained(name: str, path: str | Path | None = None, download: bool = True) -> Path:
    """The checked file of the published model `name`: found locally, else downloaded into the cache."""
    model = get(name)
    if path is not None:
        if not Path(path).is_file():
            raise _fail(model, f"{path} does not exist")
        return _check(model, Path(path))
    found = local_file(name)
    if found is not None:
        return _check(model, found)
    if not download:
        raise _fail(model, f"not found in {', '.join(map(str, search_dirs()))} and downloads are off")
    return _download(model, MODEL_CACHE / model.file)


def _download(model: PublishedModel, target: Path) -> Path:
    """Stream `model.url` into a temporary file beside `target`; rename it only once its sha256 matches.

    The temporary file is `atomic.temp_path`'s, so that the ones of killed downloads are found
    and removed (`atomic.remove_stale_temp_files`) before this one starts.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temp_files(target)
    tmp = temp_path(target)
    try:
        with urllib.request.urlopen(model.url, timeout=TIMEOUT_S) as response:
            announced = response.headers.get("Content-Length")
            if announced is not None and announced.strip() != str(model.bytes):
                raise _fail(model, f"{model.url} announces {announced.strip()} bytes, the registry "
                                   f"{model.bytes}; refused before reading (another file, or a wrong server)")
            digest = _stream(model, response, tmp)
        if digest != model.sha256:
            raise _fail(model, f"the download from {model.url} has the wrong sha256 "
                               f"({digest[:12]}..., expected {model.sha256[:12]}...)")
        os.replace(tmp, target)
    except urllib.error.HTTPError as err:
        raise _fail(model, f"{model.url} answered HTTP {err.code} {err.reason}") from None
    except urllib.error.URLError as err:
        raise _fail(model, f"cannot reach {model.url} ({err.reason}); no network?") from None
    except (http.client.HTTPException, OSError) as err:  # e.g. IncompleteRead, connection reset, timeout
        raise _fail(model, f"the download from {model.url} broke off ({type(err).__name__}: "
                           f"{' '.join(str(err).split())[:120]})") from None
    finally:
        tmp.unlink(missing_ok=True)
    _verified[(str(target.resolve()), target.stat().st_size, target.stat().st_mtime_ns)] = True
    return target


def _stream(model: PublishedModel, response, tmp: Path) -> str:
    """Copy at most `model.bytes` bytes of `response` into `tmp` within the time limits; returns their sha256.

    `read1` returns what one receive brought, so that the limits are checked while a server
    trickles (a plain `read(n)` would wait for all n bytes).
    """
    digest, received, began = hashlib.sha256(), 0, time.monotonic()
    deadline = DEADLINE_S + model.bytes / MIN_RATE_BPS
    with open(tmp, "wb") as out, tqdm(total=model.bytes, unit="B", unit_scale=True,
                                      desc=f"downloading {model.name}") as bar:
        while received < model.bytes:
            chunk = response.read1(min(1 << 16, model.bytes - received))
            if not chunk:
                break
            out.write(chunk)
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
            elapsed = time.monotonic() - began
            if elapsed > deadline and received < model.bytes:
                raise _fail(model, f"the download from {model.url} took more than {deadline:.0f} s "
                                   f"({received} of {model.bytes} bytes); abandoned")
            if elapsed > RATE_GRACE_S and received / elapsed < MIN_RATE_BPS:
                raise _fail(model, f"the download from {model.url} is too slow ({received / elapsed:.0f} bytes/s "
                                   f"over {elapsed:.0f} s, under the minimum {MIN_RATE_BPS}); abandoned")
        if received == model.bytes and response.read1(1):
            raise _fail(model, f"the download from {model.url} is longer than the registry's {model.bytes} bytes; "
                               "stopped reading there")
    if received != model.bytes:
        raise _fail(model, f"the download from {model.url} was truncated ({received} of {model.bytes} bytes)")
    return digest.hexdigest()


def load_pretrained(name: str, device: str | torch.device = "cpu", path: str | Path | None = None) -> nn.Module:
    """The published generator `name`, in eval mode, on `device` (fetched first if needed)."""
    model = get(name)
    file = fetch_pretrained(name, path)
    generator, spec = load_generator(file, map_location=device)
    check_spec(spec, model.spec, file)
    generator.published = model  # so that a chapter or a script can say which model it shows
    return generator.to(device).eval()


def export_checkpoint(checkpoint: str | Path, target: str | Path) -> dict:
    """Write a training checkpoint's generator as a publishable file; returns its registry facts.

    The file is a generator-only colorlab checkpoint (spec, stage, epoch and the weights,
    floating tensors as float16: half the size, and `load_state_dict` copies them into a
    float32 model as they are). Optimizers, discriminator and RNG states are left out.
    """
    state = load_checkpoint(checkpoint)
    weights = {key: value.half() if value.is_floating_point() else value for key, value in state["generator"].items()}
    path = save_checkpoint(target, {"spec": state["spec"], "stage": state["stage"], "epoch": state["epoch"],
                                    "generator": weights})
    return {"name": path.stem, "file": path.name, "sha256": sha256_of(path), "bytes": path.stat().st_size,
            "spec": state["spec"], "stage": state["stage"], "epochs_in_stage": state["epoch"],
            "history": state.get("history", {})}


ARCHITECTURES = {"baseline": "pix2pix U-Net", "resnet18": "ResNet18 DynamicUnet"}


def table() -> list[str]:
    """`colorlab models`: one row per published model, then what each was trained on."""
    header = (f"{'name':<20}{'architecture':<22}{'size':>5}  {'epochs':<22}{'PSNR':>6}{'colourf.':>9}{'dCF':>7}"
              "  local file")
    rows, trained_on = [header], []
    for name in MODELS:
        model, local = MODELS[name], local_file(name)
        metrics = model.metrics()
        epochs = " + ".join(f"{n} {stage}" for stage, n in model.info.get("epochs", {}).items())
        rows.append(f"{name:<20}{ARCHITECTURES.get(model.spec['arch'], model.spec['arch']):<22}"
                    f"{model.spec['size']:>5}  {epochs:<22}{metrics.get('psnr', float('nan')):>6.2f}"
                    f"{metrics.get('colourfulness', float('nan')):>9.1f}{metrics.get('dCF', float('nan')):>+7.1f}"
                    f"  {local if local else 'not here: download with colorlab models fetch ' + name}")
        trained_on.append(f"  {name}: {model.info.get('trained_on', '?')}; {model.info.get('device', '?')}, "
                          f"{model.info.get('date', '?')}")
    photos = next(iter(MODELS.values())).info.get("validation", {}).get("photos", "the validation photos")
    return rows + [f"default: {DEFAULT} (`colorlab colorize` without --model, when its file can be had)",
                   f"metrics on {photos}; trained on:"] + trained_on


def add_cli(subparsers) -> None:
    """Register `colorlab models` (list) and `colorlab models fetch NAME`; each sets `func(args) -> exit code`."""
    parser = subparsers.add_parser("models", help="list the published models, or fetch one",
                                   description="List the published models and whether their files are here.")
    parser.set_defaults(func=lambda args: print("\n".join(table())) or 0)
    commands = parser.add_subparsers(dest="models_command")
    fetch = commands.add_parser("fetch", help="find or download a published model and check its sha256")
    fetch.add_argument("name", choices=list(MODELS))
    fetch.set_defaults(func=lambda args: print(fetch_pretrained(args.name)) or 0)
