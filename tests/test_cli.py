"""The `colorlab` command end to end on CPU: train, colorize, argument errors, SIGTERM then --resume.

Most tests call `colorlab.cli.main` in-process; the bad-input colorize and the SIGTERM tests run
the real command (`python -m colorlab.cli`) in a subprocess, as a user's shell would.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab.checkpoint import load_checkpoint
from colorlab.cli import main
from colorlab.color import rgb_to_lab
from colorlab.data import ImageDataset, load_split, make_loader
from colorlab.io import GRAYSCALE_CHROMA
from colorlab.models import build_generator
from colorlab.recipes import RunConfig
from tests.conftest import smooth_color_image

COMMAND = [sys.executable, "-m", "colorlab.cli"]


def train_argv(out: Path, **options: str) -> list[str]:
    """A tiny offline baseline run (12 images, 32 px, 1 epoch); `options` override, e.g. epochs="3"."""
    settings = dict(recipe="baseline", epochs="1", size="32", n_images="12", batch_size="4", num_workers="0",
                    out=str(out)) | options
    return ["train", "--offline"] + [arg for key, value in settings.items()
                                     for arg in (f"--{key.replace('_', '-')}", value)]


def lightness(image: Image.Image) -> np.ndarray:
    rgb = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255).permute(2, 0, 1)
    return rgb_to_lab(rgb)[0].numpy()


def detailed_photo(width: int = 97, height: int = 61) -> Image.Image:
    """Smooth colours plus pixel-level noise: detail that a 32 px prediction could not reproduce."""
    rng = np.random.default_rng(0)
    smooth = np.asarray(smooth_color_image(rng, max(width, height)).resize((width, height)), dtype=np.int16)
    noise = rng.integers(-40, 41, size=smooth.shape)
    return Image.fromarray(np.clip(smooth + noise, 0, 255).astype(np.uint8))


def error_lines(stderr: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [line for line in stderr.splitlines() if "error:" in line]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[Path, Path, str]:
    """`colorlab train --offline --data FOLDER ...` once for the module: (run folder, data folder, stderr).

    FOLDER holds 12 colour photos, a half-copied JPEG, a zero-byte file, a text file named .jpg
    and a grayscale photo.
    """
    root = tmp_path_factory.mktemp("cli")
    data = root / "photos"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(12):
        smooth_color_image(rng).save(data / f"photo_{i:02d}.png")
    detailed_photo().save(data / "corrupt.jpg", quality=95)
    (data / "corrupt.jpg").write_bytes((data / "corrupt.jpg").read_bytes()[:2000])
    (data / "empty.png").touch()
    (data / "page.jpg").write_text("<html>404</html>")
    smooth_color_image(rng).convert("L").save(data / "grandma.png")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        assert main(train_argv(root / "baseline", data=str(data), n_images="100")) == 0  # the cap counts bad files
    return root / "baseline", data, stderr.getvalue()


# --- train and colorize, end to end ----------------------------------------------------------------


def test_train_writes_checkpoint_metrics_and_figures(trained):
    out, _, _ = trained
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["n_train"] + summary["n_val"] == 12
    assert summary["config"]["weights"] is None
    assert np.isfinite(summary["metrics"]["psnr"]) and 0 < summary["metrics"]["ssim"] <= 1
    for figure in ("samples.png", "losses.png"):
        with Image.open(out / figure) as image:
            assert image.format == "PNG" and min(image.size) > 100
    state = load_checkpoint(out / "gan.pt")
    assert state["spec"] == build_generator("baseline", 32).spec and state["epoch"] == 1


def test_train_names_each_skipped_image_on_one_line_and_summarises(trained):
    _, data, stderr = trained
    warnings = sorted(line for line in stderr.splitlines() if line.startswith("colorlab train: warning: "))
    expected = sorted([  # the beginning of each line: the decoder's own detail follows "corrupt ("
        f"colorlab train: warning: skipping {data / 'corrupt.jpg'}: corrupt (",
        f"colorlab train: warning: skipping {data / 'empty.png'}: empty file (0 bytes)",
        f"colorlab train: warning: skipping {data / 'page.jpg'}: not an image (cannot identify image file)",
        f"colorlab train: warning: skipping {data / 'grandma.png'}: grayscale (mean chroma 0.00 < {GRAYSCALE_CHROMA})",
        f"colorlab train: warning: {data}: kept 12 of 16: 1 corrupt, 1 empty file, 1 grayscale, 1 not an image",
    ])
    assert len(warnings) == len(expected)
    assert all(line.startswith(start) for line, start in zip(warnings, expected)), warnings
    assert "Traceback" not in stderr and "SkippedImageWarning" not in stderr


def test_colorize_keeps_the_photos_size_and_its_full_resolution_lightness(trained, tmp_path, capsys):
    photo = tmp_path / "holiday.jpg"
    detailed_photo().save(photo, quality=95)
    out, _, _ = trained
    assert main(["colorize", str(photo), "-o", str(tmp_path / "out"), "--checkpoint", str(out / "gan.pt")]) == 0
    assert capsys.readouterr().out.strip() == f"colorized 1 of 1 images into {tmp_path / 'out'}"
    with Image.open(photo) as original, Image.open(tmp_path / "out" / "holiday_color.png") as result:
        assert result.size == original.size == (97, 61)
        difference = np.abs(lightness(result) - lightness(original))
        at_model_size = original.resize((32, 32), Image.BICUBIC).resize(original.size, Image.BICUBIC)
    assert difference.max() < 1.0  # 8-bit rounding only: the photo's own L, at full resolution
    assert np.abs(lightness(at_model_size) - lightness(original)).mean() > 5 * difference.mean()  # L at 32 px


def test_colorize_command_reports_each_bad_file_colorizes_the_rest_and_exits_1(trained, tmp_path):
    run, _, _ = trained
    good, corrupt, missing = tmp_path / "good.png", tmp_path / "corrupt.jpg", tmp_path / "missing.png"
    detailed_photo(40, 30).save(good)
    detailed_photo(40, 30).save(corrupt, quality=95)
    corrupt.write_bytes(corrupt.read_bytes()[: corrupt.stat().st_size // 2])  # a half-copied file
    result = subprocess.run(
        COMMAND + ["colorize", str(good), str(corrupt), str(missing), "-o", str(tmp_path / "out"),
                   "--checkpoint", str(run / "gan.pt")],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )
    assert result.returncode == 1, result.stderr
    errors = error_lines(result.stderr)
    assert len(errors) == 2
    assert errors[0].startswith(f"colorlab colorize: error: {corrupt}: corrupt")
    assert errors[1].startswith(f"colorlab colorize: error: {missing}: cannot read")
    assert "colorized 1 of 3 images" in result.stdout
    with Image.open(tmp_path / "out" / "good_color.png") as image:
        assert image.size == (40, 30)


@pytest.mark.parametrize("contents", ["state dict of another program", "text file", "random bytes"])
def test_colorize_with_a_checkpoint_of_another_kind_is_a_clear_error(tmp_path, capsys, contents):
    checkpoint = tmp_path / "model.pt"
    if contents == "state dict of another program":
        torch.save({"state_dict": build_generator("baseline", 32).state_dict()}, checkpoint)
    elif contents == "text file":
        checkpoint.write_text("these are my notes, not a model\n")
    else:
        checkpoint.write_bytes(np.random.default_rng(0).bytes(1000))
    photo = tmp_path / "p.png"
    detailed_photo(20, 20).save(photo)
    assert main(["colorize", str(photo), "-o", str(tmp_path / "out"), "--checkpoint", str(checkpoint)]) == 2
    stderr = capsys.readouterr().err
    assert stderr.splitlines() == error_lines(stderr)[:1]  # exactly one line: the error
    assert stderr.startswith(f"colorlab colorize: error: {checkpoint}: not a")
    assert not (tmp_path / "out").exists()  # refused before any work


@pytest.mark.slow
def test_resnet18_recipe_trains_offline_without_pretrained_weights(tmp_path):
    out = tmp_path / "resnet18"
    assert main(train_argv(out, recipe="resnet18", pretrain_epochs="1", n_images="6")) == 0
    assert load_checkpoint(out / "pretrain.pt")["stage"] == "pretrain"
    spec = {"arch": "resnet18", "size": 32, "output": "tanh", "pretrained": False}
    assert load_checkpoint(out / "gan.pt")["spec"] == spec
    summary = json.loads((out / "metrics.json").read_text())
    assert summary["config"]["weights"] is None and np.isfinite(summary["metrics"]["psnr"])
    assert (out / "samples.png").is_file() and (out / "losses.png").is_file()


# --- argument validation: one `error:` line, exit code 2, no traceback -------------------------------

BAD_TRAIN_OPTIONS = [
    (dict(size="48"), "size must be a power of two between 32 and 1024 (e.g. 64, 128, 256), got 48"),
    (dict(size="0"), "size must be a power of two between 32 and 1024 (e.g. 64, 128, 256), got 0"),
    (dict(size="100"), "size must be a power of two between 32 and 1024 (e.g. 64, 128, 256), got 100"),
    (dict(epochs="0"), "epochs must be an integer >= 1, got 0"),
    (dict(batch_size="0"), "batch_size must be an integer >= 1, got 0"),
    (dict(n_images="1"), "n_images must be >= 2"),
    (dict(data="/nonexistent"), "data must be one of offline, shared, coco or an existing folder, got '/nonexistent'"),
    (dict(data="coco"), "--offline cannot train on --data coco"),
]
ARGPARSE_ERRORS = [  # refused while parsing, by argparse itself (after its usage line)
    (dict(recipe="vgg"), "argument --recipe: invalid choice: 'vgg'"),
    (dict(epochs="two"), "argument --epochs: invalid int value: 'two'"),
    (dict(device="tpu9"), "argument --device: "),  # torch names the valid devices
]


@pytest.mark.parametrize("options, message", BAD_TRAIN_OPTIONS + ARGPARSE_ERRORS)
def test_bad_train_arguments_are_one_clear_error_line(tmp_path, capsys, options, message):
    try:
        code = main(train_argv(tmp_path / "run", **options))
    except SystemExit as exit_:  # argparse's own errors exit while parsing
        code = exit_.code
    stderr = capsys.readouterr().err
    assert code == 2
    [error] = error_lines(stderr)
    assert error.startswith("colorlab train: error: ") and message in error, error
    if (options, message) in BAD_TRAIN_OPTIONS:
        assert stderr.splitlines() == [error]  # ours: no usage text, just the problem


def test_colorize_with_a_missing_checkpoint_is_one_clear_error_line(tmp_path, capsys):
    photo = tmp_path / "p.png"
    detailed_photo(20, 20).save(photo)
    assert main(["colorize", str(photo), "-o", str(tmp_path / "out"), "--checkpoint", "nope/gan.pt"]) == 2
    assert capsys.readouterr().err.splitlines() == ["colorlab colorize: error: checkpoint not found: nope/gan.pt"]


@pytest.mark.parametrize("call, message", [
    (lambda files: build_generator("baseline", 48), "size must be a power of two"),
    (lambda files: build_generator("vgg16", 64), "unknown architecture 'vgg16'"),
    (lambda files: RunConfig(size=100), "size must be a power of two"),
    (lambda files: RunConfig(epochs=0), "epochs must be an integer >= 1"),
    (lambda files: RunConfig(pretrain_epochs=-1), "pretrain_epochs must be an integer >= 1"),
    (lambda files: RunConfig(batch_size=0), "batch_size must be an integer >= 1"),
    (lambda files: RunConfig(recipe="vgg16"), "unknown recipe 'vgg16'"),
    (lambda files: RunConfig(n_images=1), "n_images must be >= 2"),
    (lambda files: make_loader(ImageDataset(files, 32), batch_size=0), "batch_size must be >= 1"),
    (lambda files: ImageDataset([], 32), "at least one image"),
    (lambda files: ImageDataset(files, 0), "size must be a positive number of pixels"),
    (lambda files: load_split("cocoa"), "offline, shared, coco or an existing folder, got 'cocoa'"),
    (lambda files: load_split(files[0].parent, n_images=1), "n_images must be an integer >= 2"),
    (lambda files: load_split(files[0].parent, val_fraction=1.0), "val_fraction must be between 0 and 1"),
])
def test_public_functions_validate_their_arguments(photo_folder, call, message):
    with pytest.raises((ValueError, FileNotFoundError), match=message):
        call(sorted(photo_folder.glob("*.png")))


# --- SIGTERM, then --resume ---------------------------------------------------------------------------


def test_sigterm_saves_a_valid_checkpoint_and_resume_finishes_the_run(tmp_path):
    out = tmp_path / "run"
    checkpoint = out / "gan.pt"
    stderr_file = tmp_path / "stderr.txt"
    with stderr_file.open("w") as stderr:  # a file, not a pipe: progress bars cannot fill it and block
        process = subprocess.Popen(COMMAND + train_argv(out, epochs="1000", n_images="10", batch_size="2",
                                                        num_workers="1"),  # 8 train images: 4 steps per epoch
                                   cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
        try:
            deadline = time.monotonic() + 120
            while not checkpoint.exists():  # written (atomically) at the end of the first epoch
                assert process.poll() is None, stderr_file.read_text()
                assert time.monotonic() < deadline, "no checkpoint after 120 s"
                time.sleep(0.05)
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=120) == 130, stderr_file.read_text()
        finally:
            if process.poll() is None:
                process.kill()
    last_line = stderr_file.read_text().strip().splitlines()[-1]
    assert last_line.startswith("colorlab train: training interrupted at epoch") and "--resume" in last_line
    state = load_checkpoint(checkpoint)
    assert state["step"] >= 1 and 1 <= state["epoch"] < 1000  # saved at the interruption, mid-epoch

    epochs = state["epoch"] + 2  # finish the interrupted epoch, then train one more: at least 4 steps after resuming
    resumed = subprocess.run(COMMAND + train_argv(out, epochs=str(epochs), n_images="10", batch_size="2")
                             + ["--resume"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads((out / "metrics.json").read_text())["n_train"] == 8
    assert len(json.loads((out / "history.json").read_text())["gan"]["loss_G"]) == epochs
    final = load_checkpoint(checkpoint)
    assert (final["epoch"], final["step"]) == (epochs, 0)
    changed = [name for name, weights in final["generator"].items()
               if weights.is_floating_point() and not torch.equal(weights, state["generator"][name])]
    assert len(changed) > len(final["generator"]) // 2  # the resumed run trained, it did not just stop


def test_unusable_data_leaves_no_run_folder(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--recipe", "baseline", "--data", str(tmp_path / "missing"), "--size", "32",
                 "--epochs", "1", "--out", str(out)]) == 2
    assert not out.exists()


# --- published models: `colorlab models`, `colorize --model` and the default model ------------------


def test_models_lists_every_published_model_and_where_its_file_is(register_published, tiny_checkpoint, tmp_path,
                                                                   monkeypatch, capsys):
    register_published("http://127.0.0.1:9/never-used.pt")
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line for line in out.splitlines()[1:6]}
    assert set(rows) == {"baseline-64", "resnet18-l1-64", "resnet18-gan-64", "resnet18-gan-64-v2", "tiny-32"}
    assert "default: tiny-32" in out  # the registered test model is made the default
    assert all("not here: download with colorlab models fetch" in row for row in rows.values())
    assert "20 cGAN + L1" in rows["baseline-64"] and "21.22" in rows["baseline-64"]  # epochs, PSNR (registry)

    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "tiny-32.pt").write_bytes(tiny_checkpoint.read_bytes())
    monkeypatch.setenv("COLORLAB_MODELS", str(tmp_path / "mine"))
    assert main(["models"]) == 0
    [row] = [line for line in capsys.readouterr().out.splitlines() if line.startswith("tiny-32 ")]
    assert row.endswith(str(tmp_path / "mine" / "tiny-32.pt"))
    assert main(["models", "fetch", "tiny-32"]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "mine" / "tiny-32.pt")


@pytest.mark.parametrize("options", [["--model", "tiny-32"], []])
def test_colorize_with_a_published_model_names_it(register_published, tiny_checkpoint, tmp_path, monkeypatch,
                                                  capsys, options):
    register_published("http://127.0.0.1:9/never-used.pt")
    monkeypatch.setenv("COLORLAB_MODELS", str(tiny_checkpoint.parent))
    photo = tmp_path / "p.png"
    detailed_photo(40, 30).save(photo)
    assert main(["colorize", str(photo), "-o", str(tmp_path / "out"), "--device", "cpu", *options]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("using the published model tiny-32: a 32 px test model, 1 cGAN + L1 epochs")
    with Image.open(tmp_path / "out" / "p_color.png") as result:
        assert result.size == (40, 30)


@pytest.mark.parametrize("options, message", [
    (["--model", "vgg-gan"], "colorlab colorize: error: no published model named 'vgg-gan'"),
    (["--model", "tiny-32", "--checkpoint", "gan.pt"], "argument --checkpoint: not allowed with argument --model"),
])
def test_colorize_model_errors_are_one_line(register_published, tmp_path, capsys, options, message):
    register_published("http://127.0.0.1:9/never-used.pt")
    photo = tmp_path / "p.png"
    detailed_photo(20, 20).save(photo)
    with contextlib.suppress(SystemExit):  # argparse exits 2 itself for conflicting options
        assert main(["colorize", str(photo), "-o", str(tmp_path / "out"), *options]) == 2
    assert message in capsys.readouterr().err.splitlines()[-1]
    assert not (tmp_path / "out").exists()


def test_colorize_without_a_model_here_downloads_the_preferred_one_and_says_so(register_published, tmp_path,
                                                                               capsys):
    register_published("http://127.0.0.1:9/tiny-32.pt")  # port 9 (discard): nothing listens on the loopback
    photo = tmp_path / "p.png"
    detailed_photo(20, 20).save(photo)
    assert main(["colorize", str(photo), "-o", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.out.startswith("using the published model tiny-32")
    [error] = captured.err.strip().splitlines()[-1:]
    assert error.startswith("colorlab colorize: error: published model 'tiny-32': cannot reach")


def test_a_bare_train_downloads_nothing_and_says_what_data_coco_would_download(monkeypatch, tmp_path, capsys):
    """`colorlab train` alone would start a multi-GB download: it names the download and its size, and stops."""
    from colorlab.data import COCO_SAMPLE_BYTES

    def no_download(*args, **kwargs):
        raise AssertionError("a bare `colorlab train` started the COCO download")

    monkeypatch.setattr("colorlab.data.coco_sample", no_download)
    monkeypatch.chdir(tmp_path)
    assert main(["train"]) == 2
    (line,) = error_lines(capsys.readouterr().err)
    assert f"fastai's COCO sample ({COCO_SAMPLE_BYTES / 1e9:.1f} GB)" in line and "ImageNet ResNet18 weights" in line
    assert "give --data coco to start that download" in line
    assert not (tmp_path / "runs").exists()
    assert main(["train", "--recipe", "baseline", "--weights", "none"]) == 2  # no backbone: only COCO is named
    assert "ImageNet" not in capsys.readouterr().err


@pytest.mark.parametrize("command", ["train", "colorize", "experiment"])
def test_every_option_has_help_text_and_its_default_shown(command):
    import argparse

    from colorlab.cli import build_parser

    parser = build_parser()
    sub = next(action for action in parser._actions if isinstance(action, argparse._SubParsersAction))
    options = [action for action in sub.choices[command]._actions if action.option_strings and action.dest != "help"]
    assert options
    for action in options:
        assert action.help and action.help.strip(), f"{command} {action.option_strings[0]} has no help text"
    text = sub.choices[command].format_help()
    for action in options:
        if action.default is not argparse.SUPPRESS:
            flat = " ".join(text.split())
            assert f"(default: {action.default})" in flat, f"{command} {action.option_strings[0]}: no default shown"
    if command == "colorize":
        assert "examples:" in text and sub.choices[command].description
