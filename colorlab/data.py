"""Where the photos come from, how they are split, and how a batch becomes (L, ab).

Datasets yield plain uint8 RGB tensors, resized once per image. Everything Lab — the
conversion, the scaling, the random flips — happens afterwards on the whole batch, on the
training device (`to_model_batch`): the reference tutorial converted each image on the CPU inside the
DataLoader, which starved the GPU.

Sources: "coco" (fastai's 10k-image COCO sample, as the reference tutorial; needs the internet),
"offline" (crops of scikit-image's bundled colour photos: always works), "shared"
(the project's offline photo set in ../shared/data when present), or any folder.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Sampler

from .color import rgb_to_L_ab
from .io import ImageLoadError, SkippedImageWarning, list_images, load_rgb, scan_images

SOURCES = ("offline", "shared", "coco")
OFFLINE_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "immunohistochemistry", "retina")
LOAD_SIDE_FACTOR = 4  # training decodes an image at most this many times its target size (see load_resized)
# The root of colorlab's caches ($COLORLAB_CACHE): each kind has one folder below it, defined once where it is
# used: cache.IMAGE_CACHE, classify.PRIOR_CACHE, hub.MODEL_CACHE, published_data.DATA_CACHE, the offline crops here.
CACHE_DIR = Path(os.environ.get("COLORLAB_CACHE", Path.home() / ".cache" / "colorlab"))
COCO_CAP = 10_000  # the reference tutorial draws 10k of the COCO sample's ~20k photos
COCO_SAMPLE_BYTES = 3_245_877_008  # the archive's size, as fastai/data/download_checks.py records it


class DataUnavailableError(RuntimeError):
    """A data source cannot be reached (e.g. the COCO download on an offline machine) or has no usable images."""


SHARED_DIR = Path(__file__).resolve().parents[2] / "shared"  # ../shared beside the repository: photos and models


def shared_data_dir() -> Path | None:
    """The project's offline photo set: $COLORLAB_SHARED_DATA, else ../shared/data beside the repository."""
    candidates = [os.environ.get("COLORLAB_SHARED_DATA"), SHARED_DIR / "data"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "photos").is_dir():
            return Path(candidate)
    return None


def offline_images(n_images: int = 64, seed: int = 0, side: int = 256) -> list[Path]:
    """`n_images` square crops of scikit-image's bundled colour photos, written once as PNGs.

    No download needed, so the book and the tests run anywhere. Crops vary in position
    and scale (30-100% of the short side), which gives a small but varied training set.
    """
    import skimage.data

    folder = CACHE_DIR / f"offline-{n_images}-{seed}-{side}"
    files = [folder / f"{i:05d}.png" for i in range(n_images)]
    if all(f.is_file() for f in files):
        return files
    folder.mkdir(parents=True, exist_ok=True)
    photos = [getattr(skimage.data, name)()[..., :3] for name in OFFLINE_PHOTOS]
    rng = np.random.default_rng(seed)
    for i, path in enumerate(files):
        photo = photos[i % len(photos)]
        h, w = photo.shape[:2]
        crop = int(min(h, w) * rng.uniform(0.3, 1.0))
        top, left = rng.integers(0, h - crop + 1), rng.integers(0, w - crop + 1)
        tile = Image.fromarray(photo[top : top + crop, left : left + crop]).resize((side, side), Image.BICUBIC)
        tmp = path.with_suffix(".tmp.png")
        tile.save(tmp)
        tmp.replace(path)  # atomic: a killed run never leaves half a PNG behind
    return files


def coco_sample() -> list[Path]:
    """fastai's COCO sample (URLs.COCO_SAMPLE), from which the reference tutorial draws its 10k images.

    The archive is `COCO_SAMPLE_BYTES` (as fastai/data/download_checks.py records it) and
    holds about 20k images; `load_split("coco")` draws `COCO_CAP` (10k) of them.
    """
    try:
        from fastai.data.external import URLs, untar_data

        folder = untar_data(URLs.COCO_SAMPLE) / "train_sample"
    except Exception as err:
        raise DataUnavailableError(
            f"could not download fastai's COCO sample ({type(err).__name__}: {err}). Offline fallback: "
            "data='offline' (scikit-image's bundled photos), data='shared' (../shared/data) or a folder of your photos."
        ) from None
    return list_images(folder)


def split_files(files: list[Path], val_fraction: float = 0.2, seed: int = 123) -> tuple[list[Path], list[Path]]:
    """Deterministic train/val split: sort first (glob order differs between machines), then shuffle with `seed`."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1, got {val_fraction}")
    files = sorted(files)
    if len(files) < 2:
        raise ValueError(f"need at least 2 images to split into train and val, got {len(files)}")
    order = np.random.default_rng(seed).permutation(len(files))
    n_val = min(len(files) - 1, max(1, round(len(files) * val_fraction)))
    return [files[i] for i in order[n_val:]], [files[i] for i in order[:n_val]]


def load_split(
    data: str | Path = "offline", n_images: int | None = None, val_fraction: float = 0.2, seed: int = 123,
    max_side: int | None = None,
) -> tuple[list[Path], list[Path]]:
    """(train, val) image files for a source name or a folder, bad and grayscale images removed.

    `n_images` caps the total of *usable* images (train + val), drawn reproducibly: a bad
    file drawn is replaced by the next one of the draw. "shared" keeps its own val folder.
    The reference tutorial's COCO run is `load_split("coco")` (`COCO_CAP` = 10k photos): 8000 train, 2000 val. Pass the
    `max_side` the loader will decode at (`LOAD_SIDE_FACTOR * size`), so that a huge JPEG it
    can decode downscaled is not excluded as too large.
    Every file left out gets a `SkippedImageWarning` naming it, then one more gives the
    summary, e.g. "photos: kept 10 of 13: 2 corrupt, 1 grayscale" (silence both with
    ``warnings.filterwarnings("ignore", category=SkippedImageWarning)``).
    """
    if n_images is not None and (isinstance(n_images, bool) or not isinstance(n_images, int) or n_images < 2):
        raise ValueError(f"n_images must be an integer >= 2 (train + val) or None for all, got {n_images!r}")
    if data == "shared":
        root = shared_data_dir()
        if root is None:
            raise DataUnavailableError("data='shared' needs ../shared/data/photos beside the repository "
                                       "(or $COLORLAB_SHARED_DATA); use data='offline' instead.")
        n_val = None if n_images is None else max(1, round(n_images * val_fraction))
        n_train = None if n_images is None else n_images - n_val
        scan = dict(seed=seed, max_side=max_side)
        train = _usable(list_images(root / "photos" / "train"), n_train, root / "photos" / "train", **scan)
        val = _usable(list_images(root / "photos" / "val"), n_val, root / "photos" / "val", **scan)
        return train, val
    if data == "offline":
        files, where, n_images = offline_images(n_images or 64, seed=seed), "offline", None
    elif data == "coco":
        files, where, n_images = coco_sample(), "coco", n_images or COCO_CAP
    else:
        folder = Path(data)
        if not folder.is_dir():
            raise FileNotFoundError(f"data must be one of {', '.join(SOURCES)} or an existing folder, got {data!r}")
        files, where = list_images(folder), folder
    usable = _usable(files, n_images, where, seed=seed, max_side=max_side, minimum=2)
    return split_files(usable, val_fraction, seed)


def _usable(files: list[Path], n: int | None, where: str | Path, seed: int, max_side: int | None,
            minimum: int = 1) -> list[Path]:
    """Up to `n` files that `scan_images` keeps, drawn in a seeded random order, returned in `files`' order.

    Warns a one-line summary when any file looked at was left out.
    """
    order = range(len(files)) if n is None or n >= len(files) else np.random.default_rng(seed).permutation(len(files))
    report = scan_images([files[i] for i in order], max_side=max_side, limit=n)
    if report.excluded:
        warnings.warn(f"{where}: {report}", SkippedImageWarning, stacklevel=3)
    if len(report.kept) < minimum:
        raise DataUnavailableError(f"{where}: fewer than {minimum} usable images ({report})")
    rank = {path: i for i, path in enumerate(files)}
    return sorted(report.kept, key=rank.__getitem__)


def load_resized(path: str | Path, size: int) -> np.ndarray:
    """One image as training sees it: RGB, squashed to (3, size, size) uint8 as in the reference tutorial.

    Decodes at most `LOAD_SIDE_FACTOR` times the target size (JPEG draft mode), so huge photos stay cheap.
    """
    image = load_rgb(path, max_side=LOAD_SIDE_FACTOR * size).resize((size, size), Image.BICUBIC)
    return np.ascontiguousarray(np.asarray(image).transpose(2, 0, 1))


class ImageDataset(Dataset):
    """Image files -> uint8 RGB tensors (3, size, size), resized (squashed) as in the reference tutorial.

    A file that stops loading after `load_split` checked it (deleted, overwritten, a network
    drive gone) must not kill epoch 7: it is reported with a `SkippedImageWarning` naming it,
    and the next loadable file of the list stands in for it. Only when no file loads any
    more is it an error (`DataUnavailableError`).
    """

    def __init__(self, files: list[Path], size: int = 256) -> None:
        if not files:
            raise ValueError("ImageDataset needs at least one image file")
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"size must be a positive number of pixels, got {size!r}")
        self.files, self.size = list(files), size

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        for offset in range(len(self.files)):
            path = self.files[(index + offset) % len(self.files)]
            try:
                return torch.from_numpy(load_resized(path, self.size))
            except ImageLoadError as err:
                warnings.warn(f"skipping {err}; the next image stands in for it", SkippedImageWarning, stacklevel=2)
        raise DataUnavailableError(f"none of the dataset's {len(self.files)} image files can be loaded any more")


class EpochSampler(Sampler[int]):
    """A shuffle that depends only on (seed, epoch): a resumed run sees the same order.

    `start` skips the first samples of the epoch, to resume in the middle of one; past the
    end (a run interrupted after an epoch's last, partial batch) the epoch is empty.

    Under DistributedDataParallel (`shard`), every rank draws the same permutation and takes
    its slice of each global batch: rank r's k-th batch is positions [k*B + r*b, k*B + (r+1)*b)
    of the epoch (b the per-rank batch, B = world_size * b), so the ranks' k-th batches together
    are exactly the k-th batch of one process with batch B. `start` is a *global* sample position,
    so a run resumed with another world size continues at the same sample; when `start` is not a
    multiple of the new B, the rest of the epoch is cut into global batches from `start` on (its
    batches then differ from those of an uninterrupted run at either size; no sample is repeated
    or skipped). The tail of the epoch, shorter than B, is dropped with `drop_last` (as one process
    with batch B drops it), else split into `world_size` nearly equal parts, one per rank.
    """

    def __init__(self, n: int, seed: int = 0, shuffle: bool = True) -> None:
        self.n, self.seed, self.shuffle = n, seed, shuffle
        self.epoch, self.start = 0, 0
        self.rank, self.world_size, self.batch_size, self.drop_last = 0, 1, 1, False

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        self.epoch, self.start = epoch, start

    def shard(self, rank: int, world_size: int, batch_size: int, drop_last: bool) -> None:
        """Take rank `rank`'s share of every epoch from now on (see the class docstring)."""
        if not 0 <= rank < world_size or batch_size < 1:
            raise ValueError(f"cannot shard as rank {rank} of {world_size} with batch size {batch_size}")
        self.rank, self.world_size, self.batch_size, self.drop_last = rank, world_size, batch_size, drop_last

    def positions(self) -> torch.Tensor:
        """The epoch positions (indices into the epoch's permutation) of this rank's samples, in order."""
        remaining = torch.arange(min(self.start, self.n), self.n)
        if self.world_size == 1:
            return remaining
        global_batch = self.world_size * self.batch_size
        full = len(remaining) // global_batch * global_batch
        mine = remaining[:full].view(-1, self.world_size, self.batch_size)[:, self.rank].flatten()
        tail = remaining[full:]
        if self.drop_last or not len(tail):
            return mine
        if len(tail) < self.world_size:  # a rank without a batch would wait forever for the others
            raise ValueError(f"the epoch ends with {len(tail)} sample(s) for {self.world_size} processes: use "
                             "drop_last, or a dataset size that leaves no such tail")
        return torch.cat([mine, torch.tensor_split(tail, self.world_size)[self.rank]])

    def __len__(self) -> int:
        if self.world_size == 1:
            return max(0, self.n - self.start)
        return len(self.positions())

    def __iter__(self):
        positions = self.positions()
        if not self.shuffle:
            return iter(positions.tolist())
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator)[positions].tolist())


def epoch_positions(loader: DataLoader) -> torch.Tensor:
    """The epoch positions of the samples `loader` yields this epoch, in order (see `EpochSampler`).

    A loader without an `EpochSampler` is taken to yield positions 0, 1, 2, ...
    """
    sampler = loader.sampler
    return sampler.positions() if isinstance(sampler, EpochSampler) else torch.arange(len(sampler))


def _hash32(x: torch.Tensor | int) -> torch.Tensor | int:
    """A 32-bit integer mixing function (xor-shift-multiply): nearby inputs give unrelated outputs."""
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def flip_mask(seed: int, epoch: int, positions: torch.Tensor) -> torch.Tensor:
    """Which samples to mirror: a hash of (seed, epoch, epoch position), about half of them.

    A sample's flip depends on where it is in the epoch, not on which process or batch holds
    it: 2 processes with batch 4 flip exactly what 1 process with batch 8 flips, and a resumed
    run flips what the uninterrupted run flipped.
    """
    key = _hash32(_hash32(seed & 0xFFFFFFFF) ^ (epoch & 0xFFFFFFFF))
    return _hash32(positions.long() ^ key) >= 1 << 31


def make_loader(
    dataset: Dataset, batch_size: int = 16, train: bool = True, seed: int = 0, num_workers: int | None = None
) -> DataLoader:
    """A DataLoader with an `EpochSampler`; workers default to min(4, cpu count - 1)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if num_workers is None:
        num_workers = min(4, max(0, (os.cpu_count() or 1) - 1))
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=EpochSampler(len(dataset), seed=seed, shuffle=train),
        num_workers=num_workers,
        pin_memory=torch.cuda.is_available(),
        persistent_workers=num_workers > 0,
        drop_last=train and len(dataset) > batch_size,
    )


def hflip(rgb: torch.Tensor, flip: torch.Tensor) -> torch.Tensor:
    """Mirror left-right the images of a batch whose `flip` entry is True."""
    return torch.where(flip.to(rgb.device, non_blocking=True)[:, None, None, None], rgb.flip(-1), rgb)


def to_model_batch(
    rgb_uint8: torch.Tensor, device: torch.device | str = "cpu", flip: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB batch -> normalised (L, ab) on `device`, mirrored where `flip` (from `flip_mask`) says."""
    rgb = rgb_uint8.to(device, non_blocking=True)
    if flip is not None:
        rgb = hflip(rgb, flip)
    return rgb_to_L_ab(rgb.float() / 255.0)


def val_batches(files: list[Path], size: int, device: torch.device | str,
                batch_size: int = 16) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(L, ab) batches of `files` in a fixed order, without flips: for validation, or to look at training photos."""
    loader = make_loader(ImageDataset(files, size), batch_size=batch_size, train=False, num_workers=0)
    return [to_model_batch(rgb, device) for rgb in loader]
