"""Decode and resize every image once, into a uint8 array on disk, instead of every epoch.

The reference tutorial opened, decoded and resized each JPEG again in every epoch. `CachedImages` does
that work once, stores the result as one ``.npy`` file of shape (N, 3, size, size) uint8,
and from then on reads it through a memory map: a batch is one fancy-index into the page
cache, fast enough for a DataLoader without worker processes.

The file is named by a hash of the resolved paths, their byte sizes and modification
times, and the image size, so editing, replacing or adding a photo gives a new cache
(the old one is simply no longer used; delete ``IMAGE_CACHE`` to reclaim the space).
It is written to a temporary file and renamed when complete: an interrupted build (Ctrl-C,
SIGTERM, disk full) never leaves half a cache or its temporary file behind.
The pixels are exactly `ImageDataset`'s; but where
`ImageDataset` lets the next image stand in for a file that stopped loading, a cache
must not store a stand-in for good, so building one fails on such a file, naming it.
"""

from __future__ import annotations

import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm  # plain text bars: notebooks without ipywidgets too

from .atomic import atomic_write
from .data import CACHE_DIR, ImageDataset, load_resized, make_loader

# Part of every cache key: bump it when ImageDataset changes how it decodes or resizes.
CACHE_FORMAT = "colorlab-images-v1: load_rgb(max_side=4*size) + bicubic squash, (N, 3, size, size) uint8"
IMAGE_CACHE = CACHE_DIR / "images"  # the decoded images' memory maps
_MAX_DECODE_THREADS = 8  # PIL releases the GIL while decoding and resizing: threads build the cache in parallel


def cache_key(files: list[str | Path], size: int) -> str:
    """Hash of (sorted resolved paths, their byte sizes and mtimes, size): any change to a source gives a new key."""
    digest = hashlib.sha256(f"{CACHE_FORMAT}\nsize={size}\n".encode())
    for path in sorted(str(Path(f).resolve()) for f in files):
        stat = os.stat(path)
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:24]


class CachedImages(Dataset):
    """The items of `ImageDataset(files, size)` (uint8 tensors (3, size, size)), decoded once and memory-mapped.

    The first construction for a given set of files and size builds the cache (with a
    progress bar); later ones, in any process, just open it. A file that fails to load
    raises `colorlab.io.ImageLoadError` naming it, at build time.
    """

    def __init__(self, files: list[str | Path], size: int = 256, cache_dir: str | Path | None = None,
                 progress: bool = True) -> None:
        if not files:
            raise ValueError("CachedImages needs at least one image file")
        self.files, self.size = [Path(f) for f in files], size
        folder = Path(cache_dir) if cache_dir is not None else IMAGE_CACHE
        self.path = folder / f"{cache_key(self.files, size)}-{size}px-{len(self.files)}.npy"
        # The array is stored in sorted-path order (so the key does not depend on the list's order);
        # `_rows[i]` is where files[i] is stored.
        resolved = [str(f.resolve()) for f in self.files]
        order = sorted(range(len(resolved)), key=resolved.__getitem__)
        self._rows = np.empty(len(order), dtype=np.int64)
        self._rows[order] = np.arange(len(order))
        if not self.path.is_file():
            _build(self.path, [self.files[i] for i in order], size, progress)
        self._images: np.ndarray | None = None

    @property
    def images(self) -> np.ndarray:
        """The (N, 3, size, size) uint8 memory map, opened lazily (also in each DataLoader worker)."""
        if self._images is None:
            self._images = np.load(self.path, mmap_mode="r")
        return self._images

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_images": None}  # a worker reopens the map instead of receiving a pickled copy

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(np.array(self.images[self._rows[index]]))

    def __getitems__(self, indices: list[int]) -> list[torch.Tensor]:
        """A whole batch by one fancy-index (torch's DataLoader calls this instead of `__getitem__` per item)."""
        return list(torch.from_numpy(self.images[self._rows[np.asarray(indices)]]).unbind(0))


def _build(path: Path, files: list[Path], size: int, progress: bool) -> None:
    """Decode and resize `files` into `path` (N, 3, size, size) uint8, atomically (`colorlab.atomic`)."""
    with _sigterm_as_interrupt(len(files)) as done, atomic_write(path, "image cache") as tmp:
        images = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(files), 3, size, size))
        threads = min(_MAX_DECODE_THREADS, os.cpu_count() or 1)
        with ThreadPoolExecutor(threads) as pool:
            items = pool.map(load_resized, files, [size] * len(files))
            try:
                with tqdm(total=len(files), desc=f"caching images at {size} px", unit="img", disable=not progress,
                          leave=False) as bar:  # closed (line cleared) on an interruption too
                    for i, item in enumerate(items):
                        images[i] = item
                        done["n"] = i + 1
                        bar.update()
            except BaseException:  # a bad file or Ctrl-C: do not decode the rest first
                pool.shutdown(cancel_futures=True)
                raise
        images.flush()
        del images


@contextmanager
def _sigterm_as_interrupt(total: int) -> Iterator[dict[str, int]]:
    """SIGTERM raises KeyboardInterrupt while the cache is built, as Ctrl-C does.

    SIGTERM's default action ends the process on the spot: no cleanup runs, the partial
    ``.npy.tmp`` file stays and nothing is said. As an exception, the temporary file is
    removed and the command reports the interruption in one line. Yields a counter of the
    images cached so far, for that line.
    """
    done = {"n": 0}
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield done
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"interrupted while caching images ({done['n']} of {total} done); "
                                "the partial cache was removed")

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield done
    finally:
        signal.signal(signal.SIGTERM, previous)


def train_loader(files: list[Path], size: int, batch_size: int, seed: int, cache: bool = True,
                 num_workers: int | None = None, progress: bool = True) -> DataLoader:
    """The training DataLoader; with `cache`, images are decoded and resized once (`CachedImages`)."""
    if cache:  # batches are one read from a memory map: worker processes would only add overhead
        return make_loader(CachedImages(files, size, progress=progress), batch_size, train=True, seed=seed,
                           num_workers=num_workers or 0)
    return make_loader(ImageDataset(files, size), batch_size, train=True, seed=seed, num_workers=num_workers)


__all__ = ["CACHE_FORMAT", "CachedImages", "cache_key", "train_loader"]
