import pytest
import torch

from colorlab.color import rgb_to_L_ab
from colorlab.data import (DataUnavailableError, EpochSampler, ImageDataset, coco_sample, load_split, make_loader,
                           offline_images, random_hflip, split_files, to_model_batch)


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


def test_offline_source_needs_no_download():
    files = offline_images(6, seed=3, side=64)
    assert len(files) == 6 and all(f.is_file() for f in files)
    assert offline_images(6, seed=3, side=64) == files  # cached, identical
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
    L_ref, ab_ref = rgb_to_L_ab(rgb.float() / 255)
    assert torch.equal(L, L_ref) and torch.equal(ab, ab_ref)
    flipped = random_hflip(rgb, torch.Generator().manual_seed(0))
    for original, out in zip(rgb, flipped):
        assert torch.equal(out, original) or torch.equal(out, original.flip(-1))
    left_right = torch.stack([torch.arange(1000), torch.arange(1000) + 1000], dim=-1).view(1000, 1, 1, 2)
    many = random_hflip(left_right, torch.Generator().manual_seed(0))
    assert 400 < (many[:, 0, 0, 0] != torch.arange(1000)).sum() < 600  # about half flipped


def test_loader_batches(photo_folder):
    dataset = ImageDataset(sorted(photo_folder.glob("*.png")), size=32)
    batches = list(make_loader(dataset, batch_size=5, train=True, num_workers=0))
    assert [len(b) for b in batches] == [5, 5]  # drop_last in training
    batches = list(make_loader(dataset, batch_size=5, train=False, num_workers=0))
    assert [len(b) for b in batches] == [5, 5, 2]


def test_shared_split_excludes_grayscale(shared_data):
    train, val = load_split("shared", n_images=40, seed=0)
    assert len(val) >= 1 and len(train) >= 20
    assert all("photos/train" in str(f) for f in train) and all("photos/val" in str(f) for f in val)
