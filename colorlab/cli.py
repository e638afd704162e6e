"""The `colorlab` command: train a recipe, colorize photos, build and grade assignments."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .recipes import RECIPES, RunConfig


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one of the seed's recipes and evaluate it",
                       description="Train a recipe; writes checkpoints, metrics.json, losses.png and samples.png.")
    p.add_argument("--recipe", choices=RECIPES, default="resnet18")
    p.add_argument("--data", default="coco", help="coco | offline | shared | a folder of photos (default: coco)")
    p.add_argument("--offline", action="store_true", help="shorthand for --data offline --weights none")
    p.add_argument("--n-images", type=int, default=None, help="cap on train+val images (default: all; coco: 10000)")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--epochs", type=int, default=20, help="GAN epochs")
    p.add_argument("--pretrain-epochs", type=int, default=20, help="L1-only epochs (resnet18 recipe)")
    p.add_argument("--weights", type=_weights, default="imagenet",
                   help="resnet18 backbone: imagenet | none | path/to/resnet18.pth")
    p.add_argument("--gan-mode", choices=("vanilla", "lsgan"), default="vanilla")
    p.add_argument("--lambda-l1", type=float, default=100.0)
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-workers", type=int, default=None)
    p.add_argument("--out", default=None, help="run folder (default: runs/RECIPE)")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")


def _train(args) -> int:
    data, weights = ("offline", None) if args.offline else (args.data, args.weights)
    n_images = args.n_images if args.n_images is not None else (10_000 if data == "coco" else None)
    config = RunConfig(recipe=args.recipe, data=data, n_images=n_images, size=args.size,
                       batch_size=args.batch_size, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                       weights=weights, gan_mode=args.gan_mode, lambda_l1=args.lambda_l1, device=args.device,
                       seed=args.seed, out=args.out or f"runs/{args.recipe}", resume=args.resume,
                       num_workers=args.num_workers)
    from .recipes import run

    summary = run(config)
    print(json.dumps(summary["metrics"], indent=1))
    print(f"wrote {config.out}/ (gan.pt, metrics.json, losses.png, samples.png) in {summary['seconds']} s")
    return 0


def _add_colorize(sub) -> None:
    p = sub.add_parser("colorize", help="colorize photos with a trained checkpoint")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--out", required=True, help="output folder for the *_color.png files")
    p.add_argument("--checkpoint", required=True, help="a colorlab checkpoint (gan.pt or pretrain.pt)")
    p.add_argument("--device", default="auto")


def _colorize(args) -> int:
    from .colorize import colorize_files

    written, failures = colorize_files(args.inputs, args.out, args.checkpoint, device=args.device)
    for _, message in failures:
        print(f"error: {message}", file=sys.stderr)
    print(f"colorized {len(written)} of {len(written) + len(failures)} images into {args.out}")
    return 1 if failures else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colorlab", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_colorize(sub)
    from .assignments import add_cli

    add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": _train, "colorize": _colorize, "assignments": lambda a: a.func(a)}
    from .data import DataUnavailableError
    from .models import WeightsUnavailableError
    from .train import NonFiniteLossError

    expected = (ValueError, FileNotFoundError, DataUnavailableError, WeightsUnavailableError, NonFiniteLossError)
    try:
        return handlers[args.command](args)
    except expected as err:  # our own clear messages: print them without a traceback
        print(f"colorlab {args.command}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as err:
        print(f"colorlab {args.command}: {err or 'interrupted'}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
