"""Checkpoints that are safe to write, safe to load, and know what they hold.

- Written atomically (`colorlab.atomic`: temp file, fsync, rename): a run killed or out of
  disk space while saving leaves the previous checkpoint intact and no temporary file.
- Loaded with `torch.load(weights_only=True)`: only tensors and plain containers, no
  pickled code runs. RNG states are therefore stored as tensors and lists. A file that
  needs more is refused, and our message never suggests loading it another way.
- Weights that are NaN or infinite are refused when loaded: they would colorize everything black.
- Every checkpoint records the generator's architecture spec (see
  `colorlab.models.generator_spec`); loading it into another architecture or image size
  fails with a message naming what differs, instead of a wall of state-dict key errors.
"""

from __future__ import annotations

import pickle
import random
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from .atomic import atomic_write

FORMAT = "colorlab-checkpoint-v1"


class CheckpointError(ValueError):
    """A file that is not a colorlab checkpoint, or one for a different model."""


def capture_rng() -> dict[str, Any]:
    """Python, NumPy and torch (CPU and CUDA) RNG states, in weights_only-safe types."""
    version, state, gauss = random.getstate()
    _, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "python": [version, list(state), gauss],
        "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng(rng: dict[str, Any]) -> None:
    version, state, gauss = rng["python"]
    random.setstate((version, tuple(state), gauss))
    keys, pos, has_gauss, cached = rng["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (which must hold "spec") atomically to `path`."""
    if "spec" not in state:
        raise ValueError("a checkpoint must record the generator spec under 'spec'")
    path = Path(path)
    with atomic_write(path, "checkpoint") as tmp, open(tmp, "wb") as file:
        torch.save({"format": FORMAT, **state}, file)  # a file object: a full disk surfaces as OSError
    return path


def load_checkpoint(path: str | Path, expected_spec: dict | None = None, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint safely; with `expected_spec`, refuse one built for another model."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; give the checkpoint file in it, e.g. {path / 'gan.pt'}")
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        with warnings.catch_warnings():  # e.g. "Detected pickle protocol 4" for a foreign file: the error says it all
            warnings.simplefilter("ignore", UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:  # torch's text would advise weights_only=False, i.e. running the file's code
        if not zipfile.is_zipfile(path):  # what torch.save writes; anything else is some other file
            raise CheckpointError(f"{path}: not a loadable colorlab checkpoint (not saved by torch.save)") from None
        raise CheckpointError(f"{path}: not a colorlab checkpoint: it holds pickled Python objects, not just "
                              "weights, and colorlab never runs code from a checkpoint") from None
    except Exception as err:
        raise CheckpointError(f"{path}: not a loadable colorlab checkpoint (truncated, corrupt or not a torch "
                              f"file: {type(err).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a colorlab checkpoint (no '{FORMAT}' marker); "
                              "was it saved by another program?")
    _check_finite(state, path)
    if expected_spec is not None:
        check_spec(state["spec"], expected_spec, path)
    return state


def _check_finite(state: dict, path: Path) -> None:
    """Refuse NaN/inf network weights: a generator holding them colorizes every photo black."""
    for net in ("generator", "discriminator"):
        weights = state.get(net)
        bad = [name for name, tensor in (weights.items() if isinstance(weights, dict) else ())
               if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and not tensor.isfinite().all()]
        if bad:
            raise CheckpointError(f"{path}: the {net}'s weights hold NaN or infinite values ({len(bad)} tensors, "
                                  f"e.g. {bad[0]}); the training that wrote it diverged, use an earlier checkpoint")


def check_spec(found: dict, expected: dict, path: str | Path = "checkpoint") -> None:
    """Raise a CheckpointError listing every field in which two generator specs differ."""
    differences = [f"{key}: checkpoint has {found.get(key)!r}, expected {expected.get(key)!r}"
                   for key in sorted(set(found) | set(expected)) if found.get(key) != expected.get(key)]
    if differences:
        raise CheckpointError(f"{path} was saved for a different generator: " + "; ".join(differences))


def load_generator(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the generator a checkpoint was trained with and load its weights: (model, spec)."""
    from .models import generator_from_spec

    state = load_checkpoint(path, map_location=map_location)
    spec = state.get("spec")
    if not isinstance(spec, dict) or "generator" not in state:
        raise CheckpointError(f"{path}: a colorlab checkpoint without a generator spec and weights")
    try:
        generator = generator_from_spec(spec)  # weights come from the checkpoint
        generator.load_state_dict(state["generator"])
        generator.spec = spec
    except (KeyError, ValueError, RuntimeError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise CheckpointError(f"{path}: its weights do not fit the generator it records ({reason})") from None
    return generator.eval(), spec
