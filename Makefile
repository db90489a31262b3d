# Convenience targets; each one sets up .venv on first use.
PY := .venv/bin/python

.venv/installed: pyproject.toml
	python3 -m venv .venv
	.venv/bin/pip install --upgrade pip
	.venv/bin/pip install -e ".[test]"
	touch $@

.PHONY: install train quickstart test clean
install: .venv/installed

train: install  ## train MobileViT-XS on Flowers-102 (downloads it into data/)
	$(PY) train.py $(ARGS)

quickstart: install  ## offline run on generated data, under a minute on 2 CPU cores
	$(PY) train.py experiment=quickstart $(ARGS)

test: install  ## the whole test suite
	$(PY) -m pytest -q

clean:  ## delete logs/ (every run directory and checkpoint) and .pytest_cache
	rm -rf logs .pytest_cache
