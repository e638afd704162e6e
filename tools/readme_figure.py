"""The README's first picture: a photo's lightness (before) and the published model's colorization (after).

    python tools/readme_figure.py ../shared/data/old-photos/old-photos_old_b.jpg -o docs/before_after.png

Uses the same code path as `colorlab colorize --model resnet18-gan-64` (colorlab.colorize at the
photo's own resolution); the picture is downscaled to `--height` pixels to stay small.
"""

from __future__ import annotations

import argparse

from PIL import Image

from colorlab import hub
from colorlab.colorize import colorize_image
from colorlab.io import load_rgb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("photo")
    parser.add_argument("-o", "--out", required=True)
    parser.add_argument("--model", default=hub.DEFAULT)
    parser.add_argument("--height", type=int, default=320)
    args = parser.parse_args()
    generator = hub.load_pretrained(args.model)
    photo = load_rgb(args.photo)
    after = colorize_image(generator, photo, generator.spec["size"])
    width = round(photo.width * args.height / photo.height)
    before, after = (image.resize((width, args.height), Image.LANCZOS) for image in (photo.convert("L"), after))
    canvas = Image.new("RGB", (2 * width + 8, args.height), "white")
    canvas.paste(before.convert("RGB"), (0, 0))
    canvas.paste(after, (width + 8, 0))
    canvas.save(args.out, optimize=True)
    print(f"wrote {args.out}: {args.photo} before | after ({args.model})")


if __name__ == "__main__":
    main()
