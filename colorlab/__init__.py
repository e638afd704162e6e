"""colorlab: image colorization with conditional GANs — the library behind the course book.

Modules, one concept each: `color` (RGB <-> Lab), `io` (robust image loading), `data`
(sources, splits, batches), `runtime` (device and precision), `cache` (decode once, uint8 memory map), `models` (U-Net,
ResNet18-DynamicUnet, PatchGAN), `losses` (cGAN + L1), `train` (the training loop),
`checkpoint`, `evaluate` (metrics, grids), `colorize` (your own photos), `recipes` (the recipes as data, and
`run`, one run end to end), `catalogue` (the compared models, named once), `record` (the results files' one
format), `experiment` (the three-model comparison), `assignments` (graded
exercises), `book` (what the chapters share: parameters, data, the book's files, the published model or
the chapter's own run), `hub` and `published_data` (the published models and evaluation photos), `comparison`
(chapter 8's reading of the results), `cli` (also `python -m colorlab`).
"""

# The one place the version is written (pyproject.toml reads it; tools/release.py bumps it, writes it
# into the chapters' install cells, and release.yml publishes the tag v<version>; tests/test_release.py).
__version__ = "0.2.0"
# The name on the package index: `colorlab` there is an unrelated package, so the distribution is
# colorlab-book while the import and the command stay `colorlab` (as scikit-image keeps `import skimage`).
DISTRIBUTION = "colorlab-book"
# Where the project lives: the one definition that download URLs (colorlab.hub) are built from;
# _config.yml's repository.url (Colab badges, launch buttons) must agree (tests/test_book.py).
REPOSITORY_URL = "https://github.com/colorlab-book/colorlab"
