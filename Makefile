# arrayfs developer commands. `make install demo` then `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install system-deps demo test bench lint docs clean fuzz fuzz-seeds soak tfds-fixture

# FUSE for the mount, and file(1), which the tests of the mount's .decoded/
# files run: installed with apt when missing (as root, or via sudo).
system-deps:
	@missing=""; \
	command -v fusermount3 >/dev/null || command -v fusermount >/dev/null || missing=" fuse3 libfuse2"; \
	command -v file >/dev/null || missing="$$missing file"; \
	if [ -z "$$missing" ]; then :; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing$$missing with apt-get"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq $$missing >/dev/null; \
	else echo "warning: no apt-get: install$$missing yourself (FUSE for 'arrayfs mount', file for its tests)"; fi

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip

install: system-deps $(PY)  ## create .venv and install arrayfs with every extra
	$(PIP) install -q -e '.[all]'
	@$(PY) -c "import arrayfs; print('arrayfs', arrayfs.__version__, 'installed in $(VENV)')"

demo: ## build a real dataset (scikit-learn digits), mount it, show it, train on it
	$(PY) examples/demo.py

test: ## the test suite (needs /dev/fuse and fusermount for the mount tests)
	$(PY) -m pytest -q tests

bench: ## benchmarks side by side with array_record / grain / ratarmount; prints ratios
	$(PY) benchmarks/run_all.py

FUZZ_SECONDS ?= 30
FUZZ_SEED ?= 0
FUZZ_TARGETS ?= file chunk transposed footer options tfrecord example

fuzz-seeds: ## seed corpora from small Google-written files, into fuzz/corpus/
	$(PY) fuzz/make_seeds.py

fuzz: fuzz-seeds ## run each atheris fuzz target for FUZZ_SECONDS (default 30); a finding fails
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_SEED=$(FUZZ_SEED) PYTHON=$(PY) fuzz/run.sh $(FUZZ_TARGETS)

# TensorFlow and TFDS live in a venv of their own: arrayfs never needs them,
# only the fixture's builder and the benchmark's peer do.
TFDS_VENV ?= .venv-tfds

$(TFDS_VENV)/bin/python:
	$(PYTHON) -m venv $(TFDS_VENV)
	$(TFDS_VENV)/bin/pip install -q --upgrade pip
	$(TFDS_VENV)/bin/pip install -q tensorflow-cpu tensorflow-datasets array-record grain scikit-learn pillow

tfds-fixture: $(TFDS_VENV)/bin/python ## rebuild tests/data/tfds with TensorFlow Datasets (own venv) and re-check arrayfs against it
	$(TFDS_VENV)/bin/python tests/data/tfds/make_fixture.py
	$(PY) -m pytest -q tests/test_tfds_source.py tests/test_example.py tests/test_example_views.py

SOAK_MINUTES ?= 1

soak: ## readers cat records through a watching mount while its shards change; wrong bytes or a dead daemon fail
	$(PY) benchmarks/soak_mount.py --minutes $(SOAK_MINUTES)

lint:
	$(VENV)/bin/ruff check arrayfs tests benchmarks examples mount_cli.py fuzz

docs:
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf build dist site *.egg-info .pytest_cache fuzz/artifacts
