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

data/emoji/train/metadata.jsonl: | setup
	$(MC) data emoji data/emoji

demo: setup data/emoji/train/metadata.jsonl
	$(MC) grid --out outputs/demo_grid.png
	@echo "sample grid: outputs/demo_grid.png"

test: setup data/emoji/train/metadata.jsonl  # the shipped evaluator is checked on the real held-out images
	$(PY) -m pytest -q

train: setup data/emoji/train/metadata.jsonl
	$(MC) train --config reference --out runs/reference

# The README's evaluation table: every benchmark on the shipped model, N=1 and best-of-4, into docs/eval_report.md.
EVAL_MODEL ?= minicream/reference
eval: setup data/emoji/train/metadata.jsonl
	$(MC) eval --model $(EVAL_MODEL) --benchmark minicream-table --out outputs/eval/table
	$(MC) eval --model $(EVAL_MODEL) --benchmark objects --out outputs/eval/objects
	$(MC) eval --model $(EVAL_MODEL) --benchmark scenes --out outputs/eval/scenes
	$(MC) eval --model $(EVAL_MODEL) --benchmark objects --limit 48 --out outputs/eval/objects48
	$(MC) eval --model $(EVAL_MODEL) --benchmark objects --limit 48 --candidates 4 --out outputs/eval/objects48_best4
	$(MC) eval --model $(EVAL_MODEL) --benchmark scenes --candidates 4 --out outputs/eval/scenes_best4
	mkdir -p docs
	cat outputs/eval/table/report.md outputs/eval/objects/report.md outputs/eval/scenes/report.md \
	    outputs/eval/objects48/report.md outputs/eval/objects48_best4/report.md outputs/eval/scenes_best4/report.md \
	    > docs/eval_report.md
	@echo "docs/eval_report.md"

bench: setup
	$(PY) bench/train_step.py

clean:
	rm -rf outputs runs .pytest_cache
