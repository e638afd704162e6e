"""colorlab.hints: simulated hints, the widened 4-channel generator, its training stage, evaluation, user hint files."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from colorlab import recipes
from colorlab.checkpoint import load_checkpoint, load_generator, save_checkpoint
from colorlab.color import L_ab_to_rgb, rgb_to_lab
from colorlab.evaluate import psnr
from colorlab.hints import (HintGenerator, HintsFileError, colourful, evaluate_hints, hint_map, hints_only_psnr,
                            parse_hints, read_hints, simulate_hints, widen)
from colorlab.models import build_generator
from colorlab.recipes import RunConfig
from tests.conftest import smooth_color_image
from tests.test_resume import _sigterm_during_step, assert_same, photos  # noqa: F401 (photos: 4 train + 1 val)

# Two float paths (a 1- and a 4-channel convolution, or one photo alone and in a batch) add the same
# products in another order: float32 round-off on values of order 1, far below any colour difference.
ATOL = 1e-5


@pytest.fixture(scope="module")
def one_channel() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_generator("resnet18", 32, weights=None, output="linear").eval()


@pytest.fixture(scope="module")
def one_channel_file(one_channel, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("init")
    return save_checkpoint(folder / "l1.pt", {"spec": one_channel.spec, "stage": "pretrain", "epoch": 1,
                                              "generator": one_channel.state_dict()})


def _batch(n: int = 4, side: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    rng = np.random.default_rng(seed)
    rgb = np.stack([np.asarray(smooth_color_image(rng, side)) for _ in range(n)])
    lab = rgb_to_lab(torch.from_numpy(rgb).permute(0, 3, 1, 2).float() / 255)
    return lab[:, :1] / 50 - 1, lab[:, 1:] / 110


# --- the widened generator ---


def test_without_hints_the_widened_generator_computes_the_one_channel_model(one_channel):
    L, _ = _batch()
    wide = widen(one_channel).eval()
    with torch.no_grad():
        expected = one_channel(L)
        assert torch.allclose(wide(L), expected, atol=ATOL)  # L alone: empty hints added
        assert torch.allclose(wide(torch.cat([L, torch.zeros(4, 3, 32, 32)], 1)), expected, atol=ATOL)
    first = wide.net.layers[0][0].weight
    assert first.shape[1] == 4 and first[:, 1:].abs().max() == 0 and torch.equal(first[:, :1], one_channel.layers[0][0].weight)


def test_the_widened_generator_can_learn_from_hints(one_channel):
    """Zero weights on the hint channels still get gradients: training can make them matter."""
    L, ab = _batch()
    wide = widen(one_channel).train()
    hints = simulate_hints(ab, 0, 0, torch.arange(4), count=5)
    (wide(torch.cat([L, hints], 1)) - ab).abs().mean().backward()
    assert wide.net.layers[0][0].weight.grad[:, 1:].abs().sum() > 0


def test_a_hint_checkpoint_loads_back_as_a_hint_generator(one_channel, tmp_path):
    wide = widen(one_channel).eval()
    path = save_checkpoint(tmp_path / "h.pt", {"spec": wide.spec, "stage": "hints", "epoch": 1,
                                               "generator": wide.state_dict()})
    loaded, spec = load_generator(path)
    assert isinstance(loaded, HintGenerator) and spec["hints"]
    L, ab = _batch()
    x = torch.cat([L, simulate_hints(ab, 0, 0, torch.arange(4), count=3)], 1)
    with torch.no_grad():
        assert torch.allclose(loaded(x), wide(x), atol=ATOL)


# --- simulated hints ---


def test_a_photo_gets_the_same_hints_in_any_batch_and_other_hints_in_another_epoch():
    _, ab = _batch(8)
    everything = simulate_hints(ab, 3, 2, torch.arange(10, 18))
    part = simulate_hints(ab[5:7], 3, 2, torch.tensor([15, 16]))
    assert torch.equal(part[:, 2], everything[5:7, 2])  # the masks: integer draws, exactly
    assert torch.allclose(part, everything[5:7], atol=ATOL)
    assert not torch.equal(simulate_hints(ab, 3, 3, torch.arange(10, 18))[:, 2], everything[:, 2])
    assert not torch.equal(simulate_hints(ab, 4, 2, torch.arange(10, 18))[:, 2], everything[:, 2])


def test_one_hint_is_a_square_of_the_patch_mean_colour():
    _, ab = _batch(6)
    hints = simulate_hints(ab, 0, 0, torch.arange(6), count=1, sides=(3,))
    for i in range(6):
        rows, cols = torch.nonzero(hints[i, 2], as_tuple=True)
        assert len(rows) == 9 and rows.max() - rows.min() == 2 and cols.max() - cols.min() == 2
        patch = ab[i, :, rows.min():rows.min() + 3, cols.min():cols.min() + 3]
        mean = patch.mean((1, 2))
        assert torch.allclose(hints[i, :2, rows, cols], mean[:, None].expand(2, 9), atol=ATOL)
        assert hints[i, :2][:, hints[i, 2] == 0].abs().max() == 0  # no colour outside the mask


def test_the_number_of_training_hints_is_geometric_with_p_one_eighth():
    """With 1-pixel patches on a 32 px image, overlaps are rare: the photos without any hint are about 1 in 8."""
    n = 4000
    hints = simulate_hints(torch.zeros(n, 2, 32, 32), 0, 0, torch.arange(n), sides=(1,))
    marked = hints[:, 2].sum((1, 2))
    assert abs((marked == 0).float().mean().item() - 1 / 8) < 0.02  # 4 standard errors (0.005)
    assert abs(marked.mean().item() - 7) < 0.6  # the geometric mean (1 - p) / p = 7, less a few overlaps


def test_hints_are_placed_around_the_centre():
    hints = simulate_hints(torch.zeros(3000, 2, 64, 64), 1, 0, torch.arange(3000), count=1, sides=(1,))
    rows, cols = torch.nonzero(hints[:, 2], as_tuple=True)[1:]
    # normal with mean 32 and sd 16, clipped to 0..63 and truncated: mean about 31.5, sd just under 16
    assert abs(rows.float().mean() - 31.5) < 1.5 and abs(cols.float().mean() - 31.5) < 1.5
    assert 13 < rows.float().std() < 16.5


def test_near_grey_photos_are_recognised():
    _, ab = _batch(2)
    grey = torch.zeros(1, 2, 32, 32) + 0.01
    assert colourful(torch.cat([ab, grey])).tolist() == [True, True, False]


# --- evaluation ---


class _CopyHints(torch.nn.Module):
    """A 'network' that outputs the hint colours it is given: its PSNR is the hints-only yardstick's."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = torch.nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return x[:, 1:3]


def test_evaluate_hints_gives_more_psnr_for_more_true_hints_and_matches_its_yardstick():
    photos = [_batch(4, seed=1), _batch(3, seed=2)]
    model = HintGenerator(_CopyHints())
    curve = evaluate_hints(model, photos, (0, 1, 10, 100), seed=0, patch=2)
    assert list(curve) == [0, 1, 10, 100]
    assert curve[0] < curve[1] < curve[10] < curve[100]
    grey = torch.cat([psnr(L_ab_to_rgb(L, torch.zeros_like(ab)), L_ab_to_rgb(L, ab)) for L, ab in photos]).mean()
    assert abs(curve[0] - grey.item()) < 1e-4
    assert curve == pytest.approx(hints_only_psnr(photos, (0, 1, 10, 100), seed=0, patch=2), abs=1e-4)


def test_a_one_channel_model_is_only_measured_without_hints(one_channel):
    photos = [_batch(2)]
    assert set(evaluate_hints(one_channel, photos, (0,), seed=0)) == {0}
    with pytest.raises(ValueError, match="takes no hints"):
        evaluate_hints(one_channel, photos, (0, 5), seed=0)


# --- training: the stage, the recipe, resume ---


def _config(folder, out, init) -> RunConfig:
    return RunConfig(recipe="hints", data=str(folder), n_images=5, size=32, batch_size=2, epochs=2, weights=None,
                     device="cpu", seed=5, out=str(out), num_workers=0, progress=False, init=str(init))


def test_sigterm_mid_training_then_resume_is_bit_identical(photos, one_channel_file, tmp_path, monkeypatch):
    straight = recipes.run(_config(photos, tmp_path / "straight", one_channel_file))
    with monkeypatch.context() as patch:
        _sigterm_during_step(patch, 3)  # epoch 1, step 1: the hints of a later epoch after the resume
        with pytest.raises(KeyboardInterrupt, match="interrupted at epoch 2, step 1"):
            recipes.run(_config(photos, tmp_path / "cut", one_channel_file))
    torch.manual_seed(1234)
    resumed = recipes.run(replace(_config(photos, tmp_path / "cut", one_channel_file), resume=True))
    reference, candidate = load_checkpoint(tmp_path / "straight" / "hints.pt"), load_checkpoint(tmp_path / "cut" / "hints.pt")
    assert reference["generator"] and reference["stage"] == "hints"
    assert_same(reference, candidate, "hints.pt")
    assert resumed["metrics"] == straight["metrics"]
    assert set(straight["metrics"]["psnr_vs_hints"]) == {0, 1, 2, 5, 10, 20, 50, 100}


def test_the_hint_stage_trains_given_the_hints_of_its_photos(one_channel, monkeypatch):
    """The generator must see hints drawn from the batch's own true colours, for the photos' epoch positions."""
    from colorlab.stages import build_stage, stage_config

    L, ab = _batch(4)
    stage = build_stage("hints", widen(one_channel), stage_config("hints", 1, seed=7)).to(torch.device("cpu"))
    seen = []
    monkeypatch.setattr(HintGenerator, "forward", lambda self, x: seen.append(self._hints) or self.net(
        torch.cat([x, self._hints], 1)))
    stage.at(2, torch.arange(20, 24))
    stage.step(L, ab)
    assert torch.equal(seen[0], simulate_hints(ab, 7, 2, torch.arange(20, 24)))


def test_the_hint_stage_trains_only_the_hint_pathway(one_channel):
    """Three steps at the hint stage's learning rate move the weights that read hints, and nothing of the
    1-channel model: not its weights, not BatchNorm's statistics, so its no-hint output stays what it was
    (trained as a whole, the network drifts from it: issue 30's 0.29 dB)."""
    from colorlab.hints import hint_pathway
    from colorlab.stages import build_stage, stage_config

    L, ab = _batch(4)
    wide = widen(one_channel)
    before = {name: value.clone() for name, value in wide.net.state_dict().items()}
    stage = build_stage("hints", wide, stage_config("hints", 1, seed=0)).to(torch.device("cpu"))
    for step in range(3):
        stage.at(0, torch.arange(4 * step, 4 * step + 4))
        stage.step(L, ab)
    masks = hint_pathway(wide)
    assert set(masks) and all(name in before for name in masks)
    after = wide.net.state_dict()
    moved = 0.0
    for name, old in before.items():
        keep = ~masks[name] if name in masks else torch.ones_like(old, dtype=torch.bool)
        assert torch.equal(after[name][keep], old[keep]), name  # untouched values: not recomputed, so exact
        if name in masks:
            moved = max(moved, float((after[name] - old)[masks[name]].abs().max()))
    assert moved > 1e-4  # Adam at lr 1e-3 moved the hint weights
    wide.eval()
    with torch.no_grad():
        assert torch.allclose(wide(L), one_channel.eval()(L), atol=ATOL)


def test_the_hints_recipe_needs_a_one_channel_model_to_start_from():
    with pytest.raises(ValueError, match="starts from a 1-channel model"):
        recipes.recipe_generator("hints", 32)


# --- a user's hints ---


def test_hints_files_in_json_and_csv(tmp_path):
    (tmp_path / "h.json").write_text(json.dumps([{"x": 10, "y": 5, "r": 255, "g": 0, "b": 0},
                                                 {"x": 0, "y": 0, "L": 50, "a": -20, "b": 30}]))
    (tmp_path / "h.csv").write_text("x,y,L,a,b\n39,29,60,10,-10\n")
    red, lab = read_hints(tmp_path / "h.json", 40, 30)
    assert red.lab[1] > 70 and red.lab[2] > 60  # sRGB red: about (53, 80, 67) in Lab
    assert lab.lab == (50.0, -20.0, 30.0)
    (corner,) = read_hints(tmp_path / "h.csv", 40, 30)
    assert (corner.x, corner.y, corner.lab) == (39.0, 29.0, (60.0, 10.0, -10.0))


@pytest.mark.parametrize("content, message", [
    ('[{"x": 40, "y": 5, "r": 1, "g": 2, "b": 3}]', "outside the 40x30 photo"),
    ('[{"x": 3, "y": -1, "r": 1, "g": 2, "b": 3}]', "outside the 40x30 photo"),
    ('[{"x": 3, "r": 1, "g": 2, "b": 3}]', "no y"),
    ('[{"x": 3, "y": 2, "r": 300, "g": 2, "b": 3}]', "between 0 and 255"),
    ('[{"x": 3, "y": 2, "r": "red", "g": 2, "b": 3}]', "must be numbers"),
    ('[{"x": 3, "y": 2}]', "needs x, y and a colour"),
    ('[{"x": 3, "y": 2,', "not valid JSON"),
    ('{"points": []}', "expected a JSON list"),
    ("[]", "no hints"),
])
def test_bad_hints_files_are_refused_in_one_line(tmp_path, content, message):
    path = tmp_path / "h.json"
    path.write_text(content)
    with pytest.raises(HintsFileError, match=message) as err:
        read_hints(path, 40, 30)
    assert "\n" not in str(err.value)


def test_a_hint_lands_on_the_models_pixel():
    (hint,) = parse_hints([{"x": 399, "y": 0, "L": 50, "a": 55, "b": -22}], 400, 200)
    grid = hint_map([hint], 400, 200, 32)
    assert grid[0, 2].sum() == 1 and grid[0, 2, 0, 31] == 1
    assert torch.allclose(grid[0, :2, 0, 31], torch.tensor([0.5, -0.2]))


def test_colorize_with_hints_from_the_command_line(one_channel, tmp_path):
    """A hint changes the colour where it is given; a hint outside the photo is one error line, exit 2."""
    wide = widen(one_channel)
    with torch.no_grad():  # a model that has learnt to use hints: add the hint's ab to its output
        block, last = wide.net.layers[-3], wide.net.layers[-2][0]  # DynamicUnet feeds the input to its last block
        for conv in (block.convpath[0][0], block.convpath[1][0]):  # whose identity path then carries the hints
            conv.weight[-3:], conv.bias[-3:] = 0, 0
        last.weight[:, -3:-1] = torch.eye(2)[:, :, None, None]
    path = save_checkpoint(tmp_path / "h.pt", {"spec": wide.spec, "stage": "hints", "epoch": 1,
                                               "generator": wide.state_dict()})
    Image.fromarray(np.full((48, 64, 3), 128, np.uint8)).save(tmp_path / "grey.png")
    (tmp_path / "hints.json").write_text(json.dumps([{"x": 32, "y": 24, "r": 255, "g": 60, "b": 0}]))
    base = [sys.executable, "-m", "colorlab", "colorize", str(tmp_path / "grey.png"), "--checkpoint", str(path)]
    done = subprocess.run(base + ["-o", str(tmp_path / "plain")], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    done = subprocess.run(base + ["-o", str(tmp_path / "hinted"), "--hints", str(tmp_path / "hints.json")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    plain = np.asarray(Image.open(tmp_path / "plain" / "grey_color.png")).astype(int)
    hinted = np.asarray(Image.open(tmp_path / "hinted" / "grey_color.png")).astype(int)
    assert hinted.shape == plain.shape == (48, 64, 3)
    redness = lambda rgb: rgb[..., 0] - rgb[..., 2]  # noqa: E731
    assert redness(hinted[24, 32]) > redness(plain[24, 32]) + 20  # the hint is orange-red: redder there
    assert abs(redness(hinted[2, 2]) - redness(plain[2, 2])) < 3  # and not in a far corner
    (tmp_path / "bad.json").write_text(json.dumps([{"x": 64, "y": 0, "r": 0, "g": 0, "b": 0}]))
    done = subprocess.run(base + ["-o", str(tmp_path / "bad"), "--hints", str(tmp_path / "bad.json")],
                          capture_output=True, text=True)
    assert done.returncode == 2 and "outside the 64x48 photo" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
