"""colorlab: image colorization with conditional GANs — the library behind the course book.

Modules, one concept each: `color` (RGB <-> Lab), `io` (robust image loading), `data`
(sources, splits, batches), `runtime` (device and precision), `cache` (decode once, uint8 memory map), `models` (U-Net,
ResNet18-DynamicUnet, PatchGAN), `losses` (cGAN + L1), `train` (the training loop),
`checkpoint`, `evaluate` (metrics, grids), `colorize` (your own photos), `recipes` (the reference
tutorial's two recipes end to end), `experiment` (the three-model comparison), `assignments` (graded
exercises), `book` (what the chapters share: parameters, data, the book's files), `comparison`
(chapter 8's reading of the results), `cli` (also `python -m colorlab`).
"""

__version__ = "0.1.0"
# Where the project lives: the one definition that download URLs (colorlab.hub) are built from;
# _config.yml's repository.url (Colab badges, launch buttons) must agree (tests/test_book.py).
REPOSITORY_URL = "https://github.com/colorlab-book/colorlab"
