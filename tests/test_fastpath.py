"""The fast path (image cache, Lab on the device, compiled networks) computes what the reference tutorial's
pipeline computes."""

import copy
import importlib.util
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from skimage.color import rgb2lab

import colorlab.cache
import colorlab.data
from colorlab.cache import CachedImages
from colorlab.data import ImageDataset, flip_mask, make_loader, to_model_batch
from colorlab.io import ImageLoadError
from colorlab.losses import GANLoss
from colorlab.models import build_discriminator, build_generator
from colorlab.stages import GANStage, TrainConfig, pix2pix_step
from colorlab.train import fit

SIZE = 32
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def files(photo_folder):
    return sorted(photo_folder.glob("*.png"), reverse=True)  # not sorted order: rows must still match


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def no_decoding(monkeypatch):
    def refuse(path, *args, **kwargs):
        raise AssertionError(f"{path} was decoded again")

    monkeypatch.setattr(colorlab.data, "load_rgb", refuse)


def test_cache_items_equal_image_dataset_items(files, cache):
    cached, decoded = CachedImages(files, SIZE, cache_dir=cache, progress=False), ImageDataset(files, SIZE)
    assert len(cached) == len(decoded)
    for i in range(len(files)):
        assert cached[i].dtype == torch.uint8 and cached[i].shape == (3, SIZE, SIZE)
        assert torch.equal(cached[i], decoded[i])
    batch = cached.__getitems__([5, 0, 5])
    assert all(torch.equal(item, decoded[i]) for item, i in zip(batch, [5, 0, 5]))


def test_cache_is_built_once_then_reused_by_any_list_order(files, cache, monkeypatch):
    first = CachedImages(files, SIZE, cache_dir=cache, progress=False)
    no_decoding(monkeypatch)
    again = CachedImages(list(reversed(files)), SIZE, cache_dir=cache, progress=False)
    assert again.path == first.path
    assert all(torch.equal(again[i], first[len(files) - 1 - i]) for i in range(len(files)))
    assert [p.name for p in cache.iterdir()] == [first.path.name]  # one file, no temporary left behind


def test_cache_is_rebuilt_when_a_source_changes(files, cache):
    before = CachedImages(files, SIZE, cache_dir=cache, progress=False)
    changed = files[3]
    Image.fromarray(np.full((40, 40, 3), (200, 30, 90), np.uint8)).save(changed)
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # a coarse-mtime file system still sees it
    after = CachedImages(files, SIZE, cache_dir=cache, progress=False)
    assert after.path != before.path
    assert torch.equal(after[3], ImageDataset([changed], SIZE)[0])
    assert not torch.equal(after[3], before[3])
    assert CachedImages(files, 64, cache_dir=cache, progress=False).path not in (before.path, after.path)


def test_a_failing_file_is_named_and_leaves_no_half_cache(files, cache, monkeypatch):
    load_rgb = colorlab.data.load_rgb

    def broken(path, *args, **kwargs):
        if Path(path) == files[4]:
            raise ImageLoadError(path, "corrupt", "truncated")
        return load_rgb(path, *args, **kwargs)

    monkeypatch.setattr(colorlab.data, "load_rgb", broken)
    with pytest.raises(ImageLoadError, match=files[4].name):
        CachedImages(files, SIZE, cache_dir=cache, progress=False)
    assert list(cache.iterdir()) == []


def test_loader_fetches_a_batch_by_one_read_and_workers_reopen_the_map(files, cache, monkeypatch):
    cached = CachedImages(files, SIZE, cache_dir=cache, progress=False)
    expected = torch.stack([cached[i] for i in range(len(files))])
    monkeypatch.setattr(CachedImages, "__getitem__", lambda self, i: pytest.fail("fetched item by item"))
    batches = list(make_loader(cached, batch_size=4, train=False, num_workers=0))
    assert torch.equal(torch.cat(batches), expected)
    assert len(pickle.dumps(cached)) < expected.numel() // 4  # what a worker receives: no copy of the pixels


def reference_batch(rgb_uint8: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference tutorial's conversion: scikit-image rgb2lab per image, L / 50 - 1, ab / 110."""
    lab = torch.from_numpy(np.stack([rgb2lab(image.permute(1, 2, 0).numpy()) for image in rgb_uint8]).astype("float32"))
    lab = lab.permute(0, 3, 1, 2)
    return lab[:, :1] / 50.0 - 1.0, lab[:, 1:] / 110.0


@pytest.fixture
def cached_batch(files, cache):
    return torch.stack(CachedImages(files, SIZE, cache_dir=cache, progress=False).__getitems__(range(8)))


def test_fast_lab_batch_equals_the_per_image_skimage_reference(cached_batch):
    L, ab = to_model_batch(cached_batch)
    L_ref, ab_ref = reference_batch(cached_batch)
    torch.testing.assert_close(L, L_ref, atol=1e-5, rtol=0)  # 1e-5 here is 5e-4 units of L (0..100)
    torch.testing.assert_close(ab, ab_ref, atol=1e-5, rtol=0)


def test_flips_on_the_device_equal_flipping_the_images_first(cached_batch):
    flips = flip_mask(3, 0, torch.arange(len(cached_batch)))
    assert 0 < flips.sum() < len(flips)
    L, ab = to_model_batch(cached_batch, flip=flips)
    L_ref, ab_ref = reference_batch(torch.stack([im.flip(-1) if f else im for im, f in zip(cached_batch, flips)]))
    torch.testing.assert_close(L, L_ref, atol=1e-5, rtol=0)
    torch.testing.assert_close(ab, ab_ref, atol=1e-5, rtol=0)


def test_fast_and_reference_batches_give_the_same_gan_losses_in_fp32(cached_batch):
    torch.manual_seed(0)
    nets = build_generator("baseline", SIZE), build_discriminator()
    losses = []
    for L, ab in (to_model_batch(cached_batch), reference_batch(cached_batch)):
        G, D = copy.deepcopy(nets)
        opt_g, opt_d = (torch.optim.Adam(n.parameters(), 2e-4, (0.5, 0.999)) for n in (G, D))
        torch.manual_seed(1)  # the same dropout masks, should the network have dropout
        losses.append(pix2pix_step(G, D, opt_g, opt_d, GANLoss(), L, ab, 100.0))
    fast, reference = losses
    assert set(fast) == {"loss_D", "loss_D_real", "loss_D_fake", "loss_G", "loss_G_GAN", "loss_G_L1"}
    for key in fast:
        torch.testing.assert_close(fast[key], reference[key], rtol=1e-4, atol=1e-6, msg=key)


class Batches(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor):
        self.images = images

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


@pytest.mark.slow
def test_compiled_networks_train_like_eager_ones_and_save_plain_checkpoints(cached_batch, tmp_path, monkeypatch):
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model: compile_(model, backend="aot_eager"))  # no C++ build
    histories, states = [], []
    for compiled in (False, True):
        torch.manual_seed(0)
        G, D = build_generator("baseline", SIZE), build_discriminator()
        loader = make_loader(Batches(cached_batch), batch_size=4, num_workers=0)
        histories.append(fit(GANStage(G, TrainConfig(epochs=1, compile=compiled), D), loader, device="cpu",
                             progress=False, checkpoint_path=tmp_path / f"{compiled}.pt"))
        states.append(torch.load(tmp_path / f"{compiled}.pt", weights_only=True)["generator"])
    eager, compiled = histories
    for key in eager.epochs:
        if key != "seconds":
            assert compiled[key] == pytest.approx(eager[key], rel=1e-3), key
    assert list(states[1]) == list(states[0])  # no "_orig_mod." prefixes: checkpoints load anywhere


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_training_step_never_waits_for_the_device(cached_batch):
    device = torch.device("cuda")
    G, D = build_generator("baseline", SIZE).to(device), build_discriminator().to(device)
    opt_g, opt_d = (torch.optim.Adam(n.parameters(), 2e-4, (0.5, 0.999), fused=True) for n in (G, D))  # as fit
    gan_loss, rgb = GANLoss().to(device), cached_batch.pin_memory()
    for step in range(3):  # the first step allocates; the later ones must not synchronise either
        torch.cuda.set_sync_debug_mode("error")
        try:
            L, ab = to_model_batch(rgb, device, flip=flip_mask(0, step, torch.arange(len(rgb))))
            L, ab = (t.contiguous(memory_format=torch.channels_last) for t in (L, ab))
            with torch.autocast("cuda", dtype=torch.bfloat16):
                pix2pix_step(G, D, opt_g, opt_d, gan_loss, L, ab, 100.0)
        finally:
            torch.cuda.set_sync_debug_mode("default")


def test_benchmark_prints_both_pipelines_and_their_ratio(photo_folder, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr("colorlab.cache.IMAGE_CACHE", tmp_path / "images")
    spec = importlib.util.spec_from_file_location("throughput", ROOT / "benchmarks" / "throughput.py")
    throughput = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(throughput)
    tiny = ["--size", "32", "--batch-size", "2", "--steps", "2", "--data-steps", "2", "--warmup", "1", "--workers", "0"]
    report = throughput.main(["--device", "cpu", "--arch", "baseline", "--data", str(photo_folder), *tiny,
                              "--json", str(tmp_path / "bench.json")])
    out = capsys.readouterr().out
    for row in ("GAN train step, baseline (img/s)", "data loading only (img/s)", "peak GPU memory, baseline"):
        assert row in out
    assert "fast/ref" in out and "target >= 3x" in out
    runs = report["results"]["baseline"]
    assert runs["speedup"] == pytest.approx(runs["fast"]["images_per_s"] / runs["reference"]["images_per_s"])
    assert all(run["images_per_s"] > 0 for run in (runs["fast"], runs["reference"]))
    assert (tmp_path / "bench.json").is_file() and any((tmp_path / "images").glob("*.npy"))
