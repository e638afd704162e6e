"""The `colorlab` command: train a recipe, colorize photos, list published models, build and grade assignments.

Exit codes: 0 done; 1 `colorize` failed on some inputs (one `error:` line each, the others are
written) or stopped because an output could not be written (disk full), or a rank of a distributed
run lost another rank (killed); 2 a bad argument, data
source or checkpoint (one `error:` line, no traceback);
130 interrupted by Ctrl-C or SIGTERM (`train` saves a checkpoint first: rerun with --resume).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path

from . import record, runs

from .data import COCO_CAP, COCO_SAMPLE_BYTES
from .losses import GAN_MODES
from .models import IMAGENET
from .recipes import RECIPES, RunConfig
from .runtime import pick_device


def _weights(value: str) -> str | None:
    return None if value.lower() == "none" else value


def _integer(high: int, low: int | None = None):
    """An argparse type: an integer up to `high` (and from `low`), so that a mistyped 10**20 is refused while
    parsing, in one line; the lower bounds of most settings are `RunConfig`'s to check, with its own messages."""
    def parse(value: str) -> int:
        number = int(value)  # a ValueError: argparse's own "invalid int value" line
        if number > high:
            raise argparse.ArgumentTypeError(f"must be at most {high:_}, got {value}")
        if low is not None and number < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return number
    parse.__name__ = "int"
    return parse


MAX_BATCH, MAX_EPOCHS, MAX_IMAGES, MAX_SEED = (runs.LIMITS[key] for key in ("batch_size", "epochs", "n_images", "seed"))


def _device(value: str) -> str:
    """Refuse a device this machine lacks while parsing, before any data is read."""
    try:
        pick_device(value)
    except (RuntimeError, ValueError) as err:  # a GPU this machine lacks; a name that is no device
        raise argparse.ArgumentTypeError(str(err).splitlines()[0]) from None
    return value


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Every option's default after its help; descriptions and examples kept as written."""


def _add_train(sub) -> None:
    p = sub.add_parser("train", help="train one of the reference tutorial's recipes and evaluate it",
                       formatter_class=_HelpFormatter,
                       description="Train a recipe; writes checkpoints, metrics.json, losses.png and samples.png.",
                       epilog="examples:\n  colorlab train --recipe baseline --offline --size 64 --epochs 1\n"
                              "  colorlab train --recipe resnet18 --data coco --size 256   # downloads COCO + ImageNet")
    p.add_argument("--recipe", choices=RECIPES, default=RunConfig.recipe,
                   help="baseline: pix2pix U-Net, cGAN + L1; resnet18: L1 pretraining, then cGAN + L1; "
                        "classification: ab bins (chapter 9); hints, hints-gan: colour hints (chapter 11)")
    p.add_argument("--data", default=None,
                   help="coco (a download: say so with --data coco) | offline | shared | a folder of photos; "
                        "required unless --offline (then: offline)")
    p.add_argument("--offline", action="store_true",
                   help="no downloads: --data offline (unless --data names a local source) and --weights none")
    p.add_argument("--n-images", type=_integer(MAX_IMAGES), default=None,
                   help=f"cap on train+val images (unset: all photos; with coco {COCO_CAP})")
    p.add_argument("--size", type=int, default=RunConfig.size, help="image side in pixels, a power of two")
    p.add_argument("--batch-size", type=_integer(MAX_BATCH), default=RunConfig.batch_size,
                   help="images per process and step; with --nproc N the global batch is N times this")
    p.add_argument("--epochs", type=_integer(MAX_EPOCHS), default=RunConfig.epochs,
                   help="epochs of the recipe's last stage (GAN, classification or hints)")
    p.add_argument("--pretrain-epochs", type=_integer(MAX_EPOCHS), default=RunConfig.pretrain_epochs,
                   help="epochs of the stage before it (resnet18: L1 pretraining; hints-gan: hints)")
    p.add_argument("--weights", type=_weights, default=RunConfig.weights,
                   help="resnet18 backbone: imagenet (a download) | none | path/to/resnet18.pth")
    p.add_argument("--gan-mode", choices=GAN_MODES, default=RunConfig.gan_mode,
                   help="adversarial loss: vanilla (pix2pix's BCE) or lsgan (least squares)")
    p.add_argument("--lambda-l1", type=float, default=RunConfig.lambda_l1, help="weight of the L1 term of the GAN stage")
    p.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--seed", type=_integer(MAX_SEED, low=0), default=RunConfig.seed,
                   help="seeds the split, the weights' init, the data order and the flips")
    p.add_argument("--num-workers", type=_integer(1024, low=0), default=None,
                   help="DataLoader worker processes with --no-cache (unset: the machine's choice; the cache needs none)")
    p.add_argument("--out", default=None, help="run folder (unset: runs/RECIPE)")
    p.add_argument("--run-root", default=None,
                   help="instead of --out: a folder named as the chapters name theirs, under RUN_ROOT, so that "
                        "chapters 5-8 with -p run_root RUN_ROOT (and the same data, n_images, seed, size, "
                        "pretrained=WEIGHTS) reuse this run")
    p.add_argument("--resume", action="store_true", help="continue from the run folder's checkpoints")
    p.add_argument("--init", default=None,
                   help="classification: a regression checkpoint of the same size to start from (all but its head); "
                        "hints: the 1-channel checkpoint or published model to widen")
    p.add_argument("--no-cache", dest="cache", action="store_false",
                   help="decode every image every epoch instead of once into a uint8 cache")
    _add_nproc(p)


def _add_nproc(p) -> None:
    p.add_argument("--nproc", type=int, default=1,
                   help="train on N processes of this machine (GPUs, or CPU cores with --device cpu) by running "
                        "this command under `python -m torch.distributed.run --standalone --nproc_per_node N`; "
                        "for several nodes, run torchrun yourself (book appendix 'Training on many GPUs')")


def _without_nproc(argv: list[str]) -> list[str]:
    """`argv` without its --nproc option: what each torchrun process runs."""
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    return kept


def _offline_sources(args) -> tuple[str, str | None]:
    """(data, weights) of `train`: --offline keeps local choices and refuses the downloading ones; without
    either, no download starts unasked: the reader is told what --data coco would fetch."""
    if not args.offline:
        if args.data is None:
            raise ValueError(_what_coco_downloads(args))
        return args.data, args.weights
    if args.data == "coco":
        raise ValueError("--offline cannot train on --data coco (a download); use offline, shared or a folder")
    weights = None if args.weights == IMAGENET else args.weights  # a local .pth file needs no download
    return args.data or "offline", weights


def _what_coco_downloads(args) -> str:
    """The one line of a bare `colorlab train`: what --data coco would download, and how large."""
    from torchvision.models import ResNet18_Weights

    what = f"fastai's COCO sample ({COCO_SAMPLE_BYTES / 1e9:.1f} GB)"
    if args.recipe != "baseline" and args.weights == IMAGENET:
        megabytes = ResNet18_Weights.IMAGENET1K_V1.meta["_file_size"]  # torchvision's record of the file
        what += f" and torchvision's ImageNet ResNet18 weights ({megabytes:.0f} MB)"
    return (f"no --data given: the reference tutorial's data would download {what}; give --data coco to start "
            "that download, or --data offline | shared | a folder (or --offline) to train without downloads")


def _train(args) -> int:
    data, weights = _offline_sources(args)
    n_images = args.n_images if args.n_images is not None else (COCO_CAP if data == "coco" else None)
    if args.run_root is not None and args.out is not None:
        raise ValueError("give --out or --run-root, not both")
    config = RunConfig(recipe=args.recipe, data=data, n_images=n_images, size=args.size,
                       batch_size=args.batch_size, epochs=args.epochs, pretrain_epochs=args.pretrain_epochs,
                       weights=weights, gan_mode=args.gan_mode, lambda_l1=args.lambda_l1, device=args.device,
                       seed=args.seed, out=args.out or f"runs/{args.recipe}", resume=args.resume,
                       num_workers=args.num_workers, cache=args.cache, init=args.init)
    if args.run_root is not None:  # the folder the run's specification names, as the chapters name theirs
        config = dataclasses.replace(config, out=str(config.spec().folder(args.run_root)))
    from .recipes import run

    resuming = args.resume and any((Path(config.out) / f"{stage}.pt").is_file()
                                   for stage in RECIPES[config.recipe].stages)
    if args.resume and not resuming:
        print(f"colorlab train: no checkpoint in {config.out}/ to resume from; starting a new run", file=sys.stderr)
    identity = config.spec(int(os.environ.get("WORLD_SIZE", "1"))).as_dict()
    with _run_folder(config.out, "colorlab train"):
        if resuming:
            runs.check_resume(config.out, identity)
        if _is_main_rank() and not (resuming and (Path(config.out) / runs.RUN_FILE).is_file()):
            runs.record_identity(config.out, identity)
        summary = run(config, command=record.command_line("colorlab train"))
    if summary is None:  # another rank of a torchrun job: rank 0 reports
        return 0
    print(json.dumps(summary["metrics"], indent=1))
    print(f"wrote {config.out}/ (checkpoints, metrics.json, losses.png, samples.png); "
          f"training seconds per stage: {summary['seconds']}")
    return 0


def _is_main_rank() -> bool:
    """True outside torchrun and in its rank 0, the process that writes the run's files."""
    return os.environ.get("RANK", "0") == "0"


def _run_folder(folder: str, who: str):
    """The run folder's lock (`runs.run_lock`), held by the process that writes it: rank 0 under torchrun."""
    return runs.run_lock(folder, who) if _is_main_rank() else nullcontext(Path(folder))


def _add_colorize(sub) -> None:
    p = sub.add_parser("colorize", help="colorize photos with a trained checkpoint or a published model",
                       formatter_class=_HelpFormatter,
                       description="Colorize photos at their full resolution: the colour is predicted on a small copy "
                                   "and applied to the full-size lightness. Writes NAME_color.png per input into --out.",
                       epilog="examples:\n  colorlab colorize old_photo.jpg more_photos/ -o colorized/\n"
                              "  colorlab colorize photo.jpg -o colorized/ --checkpoint runs/resnet18/gan.pt\n"
                              "  colorlab colorize photo.jpg -o colorized/ --model resnet18-l1-64")
    p.add_argument("inputs", nargs="+", help="image files or folders")
    p.add_argument("-o", "--out", required=True, default=argparse.SUPPRESS, help="output folder for the *_color.png files")
    p.add_argument("--overwrite", action="store_true",
                   help="replace outputs that exist already (otherwise their inputs are skipped, saying so in one line)")
    model = p.add_mutually_exclusive_group()
    model.add_argument("--checkpoint", help="a colorlab checkpoint (gan.pt or pretrain.pt)")
    model.add_argument("--model", help="a published model by name (see `colorlab models`); with neither option, "
                                       "the best published model that is here (else downloaded)")
    p.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:1 ...")
    p.add_argument("--engine", choices=("torch", "onnx"), default="torch",
                   help="onnx: the generator through ONNX Runtime on the CPU (the onnx extra; docs/performance.md)")
    p.add_argument("--hints", metavar="FILE",
                   help="one photo, colour hints from FILE (JSON or CSV: x, y in the photo's pixels and r, g, b or "
                        "L, a, b) for a model trained with hints (colorlab.hints)")


def _published_checkpoint(name: str | None) -> str:
    """The checked file of the published model `name`, or of the best one present here (else downloaded)."""
    from . import hub

    name = name or hub.best_available() or hub.DEFAULT
    print(f"using the published model {hub.get(name).describe()}")
    return str(hub.fetch_pretrained(name))


def _colorize(args) -> int:
    from .colorize import ColorizeStopped, colorize_files

    checkpoint = args.checkpoint or _published_checkpoint(args.model)
    if args.hints:
        return _colorize_with_hints(args, checkpoint)
    stopped = None
    try:
        written, failures = colorize_files(args.inputs, args.out, checkpoint, device=args.device,
                                           engine=args.engine, overwrite=args.overwrite)
    except ColorizeStopped as err:  # e.g. disk full: the outputs written so far are complete
        written, failures, stopped = err.written, err.failures, err
    for _, message in failures:
        print(f"colorlab colorize: error: {message}", file=sys.stderr)
    if stopped is not None:
        print(f"colorlab colorize: error: {_one_line(stopped)}", file=sys.stderr)
    print(f"colorized {len(written)} of {len(written) + len(failures) + (stopped is not None)} images "
          f"into {args.out}" + ("; stopped early" if stopped is not None else ""))
    return 1 if failures or stopped is not None else 0


def _colorize_with_hints(args, checkpoint: str) -> int:
    from .hints import colorize_with_hints

    if len(args.inputs) != 1 or Path(args.inputs[0]).is_dir():
        raise ValueError("--hints FILE colorizes one photo (its hints are in its pixels); give one image file")
    target = colorize_with_hints(args.inputs[0], args.out, checkpoint, args.hints, device=args.device)
    print(f"colorized 1 of 1 images into {args.out} ({target.name}) with the hints of {args.hints}")
    return 0


def _add_experiment(sub) -> None:
    p = sub.add_parser("experiment", help="train and compare baseline, L1-pretrained and pretrained+GAN",
                       formatter_class=_HelpFormatter,
                       description="The reference tutorial's three-model comparison: trains all three on the same data, "
                                   "evaluates them in one pass, writes metrics.json, grid.png and losses.png.")
    p.add_argument("--config", required=True, default=argparse.SUPPRESS, help="a YAML file, e.g. configs/reference.yaml")
    p.add_argument("--out", required=True, default=argparse.SUPPRESS,
                   help="results folder (checkpoints go to OUT/checkpoints)")
    p.add_argument("--device", type=_device, default="auto", help="auto | cpu | cuda | cuda:1 ...")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--export-models", metavar="DIR",
                      help="also write the three generators as publishable files + MANIFEST.json into DIR")
    mode.add_argument("--from-published", action="store_true",
                      help="train nothing: evaluate the published models of the config's size (colorlab models)")
    _add_nproc(p)


def _experiment(args) -> int:
    from .experiment import ExperimentConfig, evaluate_published, run_experiment

    command = f"colorlab experiment --config {args.config} --out {args.out} --device {args.device}"
    config = ExperimentConfig.from_yaml(args.config)
    with _run_folder(args.out, "colorlab experiment"):
        if args.from_published:
            summary = evaluate_published(config, args.out, device=args.device,
                                         command=command + " --from-published")
            wrote = (f"wrote {args.out}/ (metrics.json, grid.png, old_photos.png when the old photos are here); "
                     f"{summary['missing']['losses.png']}")
        else:
            if args.export_models:
                command += f" --export-models {args.export_models}"
            summary = run_experiment(config, args.out, device=args.device, command=command,
                                     export=args.export_models)
            if summary is None:  # another rank of a torchrun job: rank 0 reports
                return 0
            wrote = f"wrote {args.out}/ (metrics.json, grid.png, losses.png); stage seconds: {summary['seconds']}"
    for model, metrics in summary["metrics"].items():
        print(f"{model:>15}: " + "  ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
    print(wrote)
    return 0


def _add_study(sub) -> None:
    p = sub.add_parser("study", help="how much data does it take: quality against the number of training photos",
                       description="Trains the baseline U-Net and the ResNet18-UNet's L1 stage on nested, seeded "
                                   "subsets of the training photos, the same number of steps each, and measures them "
                                   "on the same held-out photos beside the grey yardstick (colorlab.study). "
                                   "Resumable: run it again after an interruption.",
                       epilog="example: colorlab study configs/study64.yaml --weights imagenet --out runs/study64-imagenet")
    p.add_argument("config", help="a study YAML file, e.g. configs/study64.yaml")
    p.add_argument("--weights", choices=("none", "imagenet"), default=None,
                   help="the ResNet18 encoder's start (default: the config's; imagenet needs the internet once)")
    p.add_argument("--out", default=None, help="the study's folder (default: the config's `out`)")
    p.add_argument("--device", type=_device, default=None, help="auto | cpu | cuda ... (default: the config's)")
    p.add_argument("--train", default=None, help="a folder of training photos (default: ../shared/data/photos/train)")
    p.add_argument("--val", default=None, help="a folder of held-out photos (default: ../shared/data/photos/val)")


def _study(args) -> int:
    from . import study

    config = study.load_config(args.config)
    changes = {"weights": None if args.weights == "none" else args.weights} if args.weights else {}
    changes |= {key: value for key, value in (("out", args.out), ("device", args.device)) if value is not None}
    config = dataclasses.replace(config, **changes)
    command = "colorlab study " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["study"] else f"colorlab study {args.config}"
    with _run_folder(config.out, "colorlab study"):
        record = study.run_study(config, args.train and Path(args.train), args.val and Path(args.val), command=command)
    print(study.table(record))
    print(f"colorlab study: {len(record['runs'])} runs, {record.get('wall_seconds', 0):.0f} s in all; "
          f"wrote {config.out}/metrics.json")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="colorlab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    from . import DISTRIBUTION, __version__

    parser.add_argument("--version", action="version", version=f"colorlab {__version__} ({DISTRIBUTION})")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_colorize(sub)
    _add_experiment(sub)
    _add_study(sub)
    from .assignments_cli import add_cli
    from .export import add_cli as add_export_cli
    from .hub import add_cli as add_models_cli
    from .published_data import add_cli as add_data_cli

    add_cli(sub)
    add_models_cli(sub)
    add_export_cli(sub)
    add_data_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "nproc", 1) != 1:
        if args.nproc < 1:
            parser.error(f"--nproc must be >= 1, got {args.nproc}")
        if "WORLD_SIZE" not in os.environ:  # not yet under torchrun: become it (it runs us N times)
            from .distributed import launch

            launch(args.nproc, _without_nproc(sys.argv[1:] if argv is None else argv))
    handlers = {"train": _train, "colorize": _colorize, "experiment": _experiment, "study": _study,
                "assignments": lambda a: a.func(a), "models": lambda a: a.func(a),
                "export": lambda a: a.func(a), "data": lambda a: a.func(a)}
    from .assignments_cli import MissingExtraError
    from .data import DataUnavailableError
    from .hub import PublishedModelError
    from .models import WeightsUnavailableError
    from .published_data import DataAssetError
    from .train import NonFiniteLossError

    # Our own clear messages (ImageLoadError and CheckpointError are ValueErrors), and the
    # system's (missing file, permission denied, disk full): one line, no traceback.
    expected = (ValueError, OSError, DataUnavailableError, WeightsUnavailableError, NonFiniteLossError,
                PublishedModelError, MissingExtraError, DataAssetError)
    try:
        with _skipped_images_one_per_line(f"colorlab {args.command}"):
            return handlers[args.command](args)
    except expected as err:
        print(f"colorlab {args.command}: error: {_one_line(err)}", file=sys.stderr)
        return 2
    except RuntimeError as err:  # under torchrun: another rank died (killed, out of memory): one line per rank
        from .distributed import launcher_reports, lost_a_rank

        if not lost_a_rank(err):
            raise
        if launcher_reports():  # `--nproc`'s launcher says which rank died, in one line for the whole job
            return 1
        print(f"colorlab {args.command}: error: rank {os.environ.get('RANK')} lost contact with another rank "
              f"({_one_line(err)[:160]})", file=sys.stderr)
        return 1
    except KeyboardInterrupt as err:  # training has saved a checkpoint first (see colorlab.train)
        hint = "; run the same command with --resume to continue" if args.command == "train" else ""
        print(f"colorlab {args.command}: {_one_line(err) or 'interrupted'}{hint}", file=sys.stderr)
        return 130


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


@contextmanager
def _skipped_images_one_per_line(prefix: str):
    """Show each skipped or downscaled image as `<prefix>: warning: <file>: <reason>`, without Python's source line.

    A bad photo in a folder is expected, not a bug in the code that noticed it. Other warnings
    keep their usual format; `warnings.catch_warnings` restores everything afterwards.
    """
    from .colorize import DownscaledWarning, SkippedOutputWarning
    from .io import SkippedImageWarning

    with warnings.catch_warnings():
        show_others = warnings.showwarning

        def show(message, category, filename, lineno, file=None, line=None):
            if issubclass(category, (SkippedImageWarning, DownscaledWarning, SkippedOutputWarning)):
                print(f"{prefix}: warning: {message}", file=file or sys.stderr)
            else:
                show_others(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        yield


if __name__ == "__main__":
    sys.exit(main())
