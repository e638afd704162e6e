# colorlab: every target installs what it needs first (idempotent, ~10 s when already installed).
PYTHON ?= python3
PIP_FLAGS ?= --quiet --disable-pip-version-check

.PHONY: install fetch book test demo bench assignments clean

install:
	$(PYTHON) -m pip install $(PIP_FLAGS) -e ".[dev]" -c constraints.txt
	@# onnxruntime-web for the book's widget and its tests, as package-lock.json pins it
	@if command -v npm >/dev/null; then npm ci --no-audit --no-fund --loglevel=error; else echo "npm not found: no onnxruntime-web (the widget says it cannot run)"; fi

## The release's assets into the cache (~/.cache/colorlab), each checked against its sha256: every published
## model and the evaluation photos, so that the chapters show the published results (book.yml runs it).
fetch: install
	for name in $$($(PYTHON) -c "from colorlab import hub; print(*hub.MODELS)"); do $(PYTHON) -m colorlab models fetch $$name || exit 1; done
	$(PYTHON) -m colorlab data fetch eval

## The main job: execute every chapter (sized for this machine) and build the HTML book into _build/html.
book: install
	$(PYTHON) tools/build_book.py

## The test suite (what CI runs): library, chapters (smoke parameters), assignments, book build.
test: install
	$(PYTHON) -m pytest -q -n 2 --dist loadfile

## A two-minute CPU demo: train the baseline briefly on the offline images, colorize a photo.
demo: install
	colorlab train --recipe baseline --offline --size 64 --epochs 1 --n-images 24 --batch-size 8 --out runs/demo
	colorlab colorize $$($(PYTHON) -c "import skimage,os;print(os.path.join(os.path.dirname(skimage.__file__),'data','chelsea.png'))") -o runs/demo/colorized --checkpoint runs/demo/gan.pt

## Throughput benchmark: the reference tutorial's pipeline vs colorlab's fast path, one run.
bench: install
	$(PYTHON) benchmarks/throughput.py

## Student versions and nbgrader release layout of the graded chapters.
assignments: install
	colorlab assignments build -o _build/assignments

clean:
	rm -rf _build runs .pytest_cache
