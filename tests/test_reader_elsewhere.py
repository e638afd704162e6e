"""A reader elsewhere: the built wheel in a fresh virtual environment, outside the repository, with no ../shared,
an empty cache, and a release played by an HTTP server on 127.0.0.1.

The venv sees the machine's site-packages (torch and the rest are not installed twice) but gets
colorlab only from the wheel (`pip install --no-deps`), and every test checks that the colorlab it
imports is the venv's copy. The release is the test's own: three generators of the published
models' architectures with random weights (exported as published files are) and a packed asset
of generated photos, registered in a model and a data registry of the test that
$COLORLAB_MODEL_REGISTRY and $COLORLAB_DATA_REGISTRY name; $COLORLAB_RELEASE_URL points the
downloads at the server. These three variables are documented features (README, "Data and weights").
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import colorlab
from colorlab import hub

from conftest import make_eval_release, smooth_color_image

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
STAGE_MODELS = ("baseline-64", "resnet18-l1-64", "resnet18-gan-64-v2")  # chapter 8's three, at 64 px
KERNEL = "colorlab-reader"


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(command, capture_output=True, text=True, **kwargs)


def _published_release(folder: Path) -> Path:
    """models-v1/<file> for STAGE_MODELS (random weights, real architectures) and a registry of them."""
    from colorlab.checkpoint import save_checkpoint
    from colorlab.models import generator_from_spec

    registry = json.loads(hub.REGISTRY_FILE.read_text())
    entries = []
    (folder / "release" / "models-v1").mkdir(parents=True)
    for name in STAGE_MODELS:
        entry = dict(next(entry for entry in registry["models"] if entry["name"] == name))
        torch.manual_seed(0)
        generator = generator_from_spec(entry["spec"])
        training = save_checkpoint(folder / f"{name}-training.pt", {
            "spec": entry["spec"], "stage": entry["stage"], "epoch": 1, "generator": generator.state_dict()})
        facts = hub.export_checkpoint(training, folder / "release" / "models-v1" / f"{name}.pt")
        entry.update(file=facts["file"], sha256=facts["sha256"], bytes=facts["bytes"],
                     what=f"{entry.get('what', name)} (random weights: the reader test's stand-in)")
        entries.append(entry)
    registry.update(models=entries, preference=list(STAGE_MODELS), default="resnet18-gan-64-v2")
    path = folder / "published_models.json"
    path.write_text(json.dumps(registry))
    return path


@pytest.fixture(scope="module")
def reader(tmp_path_factory) -> dict:
    """The wheel, installed into a venv in a temporary folder; the test release (not yet served)."""
    if _run([sys.executable, "-m", "build", "--version"]).returncode != 0:
        pytest.skip("`build` is not installed: `pip install -e '.[dev]' -c constraints.txt` installs it")
    home = tmp_path_factory.mktemp("reader")
    dist = home / "dist"
    built = _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(ROOT)])
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    (wheel,) = dist.glob("colorlab_book-*.whl")
    assert wheel.name.startswith(f"colorlab_book-{colorlab.__version__}-") and list(dist.glob("colorlab_book-*.tar.gz"))

    venv = home / "venv"
    assert _run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    installed = _run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", str(wheel)])
    assert installed.returncode == 0, installed.stderr
    kernel = _run([str(python), "-m", "ipykernel", "install", "--prefix", str(venv), "--name", KERNEL])
    assert kernel.returncode == 0, kernel.stderr

    data = make_eval_release(home / "data")
    models_registry = _published_release(home / "models")
    (data["release"] / "models-v1").symlink_to(home / "models" / "release" / "models-v1")  # one release folder
    work = home / "work"  # the reader's folder: no repository around it, no ../shared beside it
    work.mkdir()
    smooth_color_image(__import__("numpy").random.default_rng(3), side=96).save(work / "photo.jpg")
    return {"venv": venv, "python": python, "work": work, "release": data["release"], "wheel": wheel,
            "registries": {"COLORLAB_MODEL_REGISTRY": str(models_registry),
                           "COLORLAB_DATA_REGISTRY": str(data["registry"])}}


def _environment(reader: dict, cache: Path, url: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items()
           if not key.startswith("COLORLAB_") and key not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return env | reader["registries"] | {"COLORLAB_CACHE": str(cache), "COLORLAB_RELEASE_URL": url,
                                          "PATH": f"{reader['venv'] / 'bin'}{os.pathsep}{env['PATH']}"}


def _colorlab(reader, env, *args) -> subprocess.CompletedProcess:
    return _run([str(reader["venv"] / "bin" / "colorlab"), *args], env=env, cwd=reader["work"])


def test_the_venv_imports_the_wheels_colorlab_and_no_shared_folder_is_in_reach(reader, tmp_path):
    env = _environment(reader, tmp_path / "cache", "http://127.0.0.1:9")
    probe = _run([str(reader["python"]), "-c", "import colorlab, colorlab.data as d, colorlab.hub as h; "
                  "print(colorlab.__file__); print(d.shared_data_dir()); print(h.SHARED_MODELS.is_dir())"],
                 env=env, cwd=reader["work"])
    where, shared, models = probe.stdout.split("\n")[:3]
    assert Path(where).is_relative_to(reader["venv"]), f"imported {where}, not the wheel's copy"
    assert (shared, models) == ("None", "False")


def test_the_command_from_the_wheel_downloads_the_default_model_and_colorizes(reader, release_server, tmp_path):
    cache = tmp_path / "cache"
    env = _environment(reader, cache, release_server.serve(reader["release"]))
    version = _colorlab(reader, env, "--version")
    assert version.stdout.strip() == f"colorlab {colorlab.__version__} (colorlab-book)"
    models = _colorlab(reader, env, "models")
    assert models.returncode == 0 and "default: resnet18-gan-64-v2" in models.stdout
    assert "not here: download with colorlab models fetch resnet18-gan-64-v2" in models.stdout
    out = tmp_path / "colorized"
    colorized = _colorlab(reader, env, "colorize", "photo.jpg", "-o", str(out), "--device", "cpu")
    assert colorized.returncode == 0, colorized.stderr
    assert (out / "photo_color.png").is_file()
    assert sorted(p.name for p in (cache / "models").iterdir()) == ["resnet18-gan-64-v2.pt"]
    print("\n".join(["$ colorlab --version", version.stdout.strip(), "$ colorlab models", models.stdout.strip(),
                     "$ colorlab colorize photo.jpg", colorized.stdout.strip()]))


def _chapter_8(reader, env, out: Path) -> subprocess.CompletedProcess:
    from colorlab.book import SMOKE_PARAMETERS, declared_parameters

    chapter = ROOT / "book" / "08_evaluation.ipynb"  # the reader's copy of the notebook: executed in their folder
    parameters = {name: value for name, value in SMOKE_PARAMETERS.items() if name in declared_parameters(chapter)}
    parameters["run_root"] = str(out.parent / "runs")
    command = [str(reader["python"]), "-m", "papermill", str(chapter), str(out), "-k", KERNEL, "--cwd",
               str(reader["work"]), "--no-progress-bar"]
    for name, value in parameters.items():
        command += ["-p", name, str(value)]
    return _run(command, env=env, cwd=reader["work"], timeout=1200)


def _outputs(notebook: Path) -> str:
    """Every text and HTML output of an executed notebook, in order."""
    cells = json.loads(notebook.read_text())["cells"]
    texts = []
    for output in (output for cell in cells for output in cell.get("outputs", [])):
        texts.append("".join(output.get("text", "")))
        texts.append("".join(output.get("data", {}).get("text/html", "")))
        texts.append("".join(output.get("data", {}).get("text/plain", "")))
    return "\n".join(texts)


def test_chapter_8_downloads_and_verifies_the_models_and_photos_and_shows_the_published_table(
        reader, release_server, tmp_path):
    cache = tmp_path / "cache"
    url = release_server.serve(reader["release"])
    run = _chapter_8(reader, _environment(reader, cache, url), tmp_path / "out.ipynb")
    assert run.returncode == 0, run.stderr[-3000:]
    text = _outputs(tmp_path / "out.ipynb")
    assert f"({reader['venv']}" in text  # installed(): the chapter ran the wheel's colorlab
    for stage, name in zip(("baseline", "pretrain", "gan"), STAGE_MODELS):
        assert f"{stage}: the published model {name}: " in text
    assert text.count(f"downloaded into {cache / 'models'}, sha256 checked") == 3
    assert f"evaluation photos: downloaded eval-test-v1.zip (sha256 checked) and unpacked into {cache / 'data'}" in text
    assert f"evaluated on 6 held-out photos of COCO val2017 ({cache / 'data' / 'eval-test-v1' / 'photos' / 'val'})" in text
    table = text[text.index("evaluated on 6 held-out photos"):]
    assert all(label in table for label in ("baseline", "L1 only", "L1 + GAN", "ground truth"))  # the published table
    assert sorted(p.name for p in (cache / "models").iterdir()) == sorted(f"{name}.pt" for name in STAGE_MODELS)
    assert "old-photos/old_0.jpg" in text and "colorized 4 of 4 images" in text  # 2 photos + the asset's 2 old ones
    print("\n".join(line for line in text.splitlines() if "published model" in line or "evaluat" in line))


def test_chapter_8_offline_finishes_on_its_own_run_and_says_why(reader, release_server, tmp_path):
    url = release_server.serve(reader["release"])
    release_server.stop()  # the release is gone: an offline laptop
    cache = tmp_path / "cache"
    run = _chapter_8(reader, _environment(reader, cache, url), tmp_path / "out.ipynb")
    assert run.returncode == 0, run.stderr[-3000:]
    text = _outputs(tmp_path / "out.ipynb")
    for stage, name in zip(("baseline", "pretrain", "gan"), STAGE_MODELS):
        assert (f"{stage}: this chapter's own run, since the published model could not be had (published model "
                f"{name!r}: cannot reach {url}/models-v1/{name}.pt") in text
    assert "Not all three published models could be had" in text
    assert not list(cache.rglob("*.pt")), "nothing may be left in the cache"
    print("\n".join(line for line in text.splitlines() if "own run" in line))


def test_a_damaged_file_on_the_server_is_refused_and_leaves_nothing_in_the_cache(reader, release_server, tmp_path):
    damaged = tmp_path / "release"
    (damaged / "models-v1").mkdir(parents=True)
    (damaged / "data-v1").mkdir()
    for source in (reader["release"] / "models-v1" / "resnet18-gan-64-v2.pt",
                   reader["release"] / "data-v1" / "eval-test-v1.zip"):
        data = bytearray(source.read_bytes())
        data[len(data) // 2] ^= 0xFF  # the same size: only the checksum can tell
        (damaged / source.parent.name / source.name).write_bytes(bytes(data))
    cache = tmp_path / "cache"
    env = _environment(reader, cache, release_server.serve(damaged))
    model = _colorlab(reader, env, "models", "fetch", "resnet18-gan-64-v2")
    (refused,) = [line for line in model.stderr.splitlines() if line.startswith("colorlab models: error:")]
    assert model.returncode == 2 and "has the wrong sha256" in refused
    photos = _colorlab(reader, env, "data", "fetch", "eval")
    (refused_photos,) = [line for line in photos.stderr.splitlines() if line.startswith("colorlab data: error:")]
    assert photos.returncode == 2 and "has the wrong sha256" in refused_photos
    assert [p.relative_to(cache).as_posix() for p in cache.rglob("*") if p.is_file()] == []
    assert hashlib.sha256((damaged / "data-v1" / "eval-test-v1.zip").read_bytes()).hexdigest() != \
        json.loads(Path(reader["registries"]["COLORLAB_DATA_REGISTRY"]).read_text())["data"][0]["sha256"]
    print(refused, refused_photos, sep="\n")
