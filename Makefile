# arrayfs developer commands. `make install demo` then `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install demo test bench lint docs clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: $(PY)  ## create .venv and install arrayfs with every extra
	$(PIP) install -q -e '.[all]'
	@$(PY) -c "import arrayfs; print('arrayfs', arrayfs.__version__, 'installed in $(VENV)')"

demo: ## build a real dataset (scikit-learn digits), mount it, show it, train on it
	$(PY) examples/demo.py

test: ## the test suite (needs /dev/fuse and fusermount for the mount tests)
	$(PY) -m pytest -q tests

bench: ## benchmarks side by side with array_record / grain / ratarmount; prints ratios
	$(PY) benchmarks/run_all.py

lint:
	$(VENV)/bin/ruff check arrayfs tests benchmarks examples mount_cli.py

docs:
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf build dist site *.egg-info .pytest_cache
