import time

import numpy as np
import pytest
import skimage.color
import torch
from PIL import Image

from colorlab.io import SkippedImageWarning
from colorlab.data import (DataUnavailableError, EpochSampler, ImageDataset, coco_sample, load_split, make_loader,
                           offline_images, split_files, to_model_batch)
from tests.conftest import smooth_color_image


def test_split_is_deterministic_and_independent_of_listing_order(photo_folder):
    files = sorted(photo_folder.glob("*.png"))
    train, val = split_files(files, val_fraction=0.25, seed=1)
    train2, val2 = split_files(list(reversed(files)), val_fraction=0.25, seed=1)
    assert (train, val) == (train2, val2)
    assert len(val) == 3 and len(train) == 9 and not set(train) & set(val)
    assert split_files(files, 0.25, seed=2) != (train, val)


def test_seed_split_sizes():
    files = [f"{i:05d}.jpg" for i in range(10_000)]
    train, val = split_files(files, val_fraction=0.2)
    assert (len(train), len(val)) == (8000, 2000)


def test_dataset_resizes_to_uint8_tensors(photo_folder):
    dataset = ImageDataset(sorted(photo_folder.glob("*.png")), size=32)
    item = dataset[0]
    assert item.shape == (3, 32, 32) and item.dtype == torch.uint8


def test_load_split_from_folder(photo_folder):
    train, val = load_split(photo_folder, n_images=10, seed=0)
    assert len(train) + len(val) == 10 and len(val) == 2


def test_offline_source_needs_no_download_and_is_written_once(tmp_path, monkeypatch):
    monkeypatch.setattr("colorlab.data.CACHE_DIR", tmp_path)
    files = offline_images(6, seed=3, side=64)
    pixels = [np.asarray(Image.open(f)) for f in files]
    assert all(p.shape == (64, 64, 3) and p.std() > 5 for p in pixels)  # real photo crops, not blank tiles
    assert len({p.tobytes() for p in pixels}) == 6  # six different crops
    written = {f: f.stat().st_mtime_ns for f in files}
    time.sleep(0.01)
    assert offline_images(6, seed=3, side=64) == files
    assert {f: f.stat().st_mtime_ns for f in files} == written  # reused from the cache, not rewritten
    other = offline_images(6, seed=4, side=64)
    assert not np.array_equal(np.asarray(Image.open(other[0])), pixels[0])  # the seed chooses the crops
    train, val = load_split("offline", n_images=6, seed=3)
    assert len(train) + len(val) == 6


def test_coco_offline_fails_with_message_naming_the_fallback(monkeypatch):
    import fastai.data.external as external

    def no_network(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(external, "untar_data", no_network)
    with pytest.raises(DataUnavailableError, match="data='offline'"):
        coco_sample()


def test_unknown_source_is_refused():
    with pytest.raises(FileNotFoundError, match="offline, shared, coco"):
        load_split("/no/such/folder")


def test_epoch_sampler_depends_only_on_seed_and_epoch():
    a, b = EpochSampler(20, seed=1), EpochSampler(20, seed=1)
    a.set_epoch(3)
    b.set_epoch(3)
    order = list(a)
    assert order == list(b) and sorted(order) == list(range(20))
    b.set_epoch(3, start=5)
    assert list(b) == order[5:]
    b.set_epoch(4)
    assert list(b) != order


def test_to_model_batch_matches_per_image_conversion_and_flips():
    rgb = torch.randint(0, 256, (4, 3, 16, 16), dtype=torch.uint8)
    L, ab = to_model_batch(rgb)
    for i, image in enumerate(rgb):  # scikit-image, one image at a time, float64: an independent reference
        lab = torch.from_numpy(skimage.color.rgb2lab(image.permute(1, 2, 0).numpy() / 255.0)).permute(2, 0, 1)
        assert torch.allclose(L[i].double(), lab[:1] / 50 - 1, atol=1e-4)
        assert torch.allclose(ab[i].double(), lab[1:] / 110, atol=1e-4)
    flip = torch.tensor([True, False, True, False])
    L_flipped, ab_flipped = to_model_batch(rgb, flip=flip)
    for i, mirrored in enumerate(flip):  # exactly the images the mask names are mirrored, the others untouched
        expected = (L[i].flip(-1), ab[i].flip(-1)) if mirrored else (L[i], ab[i])
        # the same per-pixel arithmetic on the same values, in another memory order: 1e-6 allows for vectorised tails
        torch.testing.assert_close(L_flipped[i], expected[0], atol=1e-6, rtol=0)
        torch.testing.assert_close(ab_flipped[i], expected[1], atol=1e-6, rtol=0)


def test_loader_batches(photo_folder):
    dataset = ImageDataset(sorted(photo_folder.glob("*.png")), size=32)
    batches = list(make_loader(dataset, batch_size=5, train=True, num_workers=0))
    assert [len(b) for b in batches] == [5, 5]  # drop_last in training
    batches = list(make_loader(dataset, batch_size=5, train=False, num_workers=0))
    assert [len(b) for b in batches] == [5, 5, 2]


def test_shared_split_keeps_its_folders_and_excludes_grayscale(tmp_path, monkeypatch):
    """A shared-data layout generated here (photos/train, photos/val), so the test runs without ../shared."""
    rng = np.random.default_rng(0)
    grey = set()
    for split, n in (("train", 8), ("val", 3)):
        folder = tmp_path / "photos" / split
        folder.mkdir(parents=True)
        for i in range(n):
            photo = smooth_color_image(rng)
            if i % 3 == 0:  # every third photo is black and white
                photo = photo.convert("L").convert("RGB")
                grey.add(folder / f"{i}.png")
            photo.save(folder / f"{i}.png")
    monkeypatch.setenv("COLORLAB_SHARED_DATA", str(tmp_path))
    with pytest.warns(SkippedImageWarning, match="grayscale"):
        train, val = load_split("shared", seed=0)
    assert not grey & set(train + val)
    assert len(train) == 8 - 3 and len(val) == 3 - 1
    assert all(f.parent.name == "train" for f in train) and all(f.parent.name == "val" for f in val)


def test_data_does_not_import_cache_which_builds_on_it():
    """colorlab.cache reads images with colorlab.data; data importing cache back (even inside a function) is a circle."""
    import ast
    from pathlib import Path

    import colorlab.data

    tree = ast.parse(Path(colorlab.data.__file__).read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert "cache" not in imported and "colorlab.cache" not in imported
