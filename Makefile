# arrayfs developer commands. `make install demo` then `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip

.PHONY: install system-deps demo test bench lint docs clean fuzz fuzz-seeds soak

# FUSE for the mount: installed with apt when missing (as root, or via sudo).
system-deps:
	@if command -v fusermount3 >/dev/null || command -v fusermount >/dev/null; then :; \
	elif command -v apt-get >/dev/null; then \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  echo "installing fuse3 and libfuse2 with apt-get"; \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq fuse3 libfuse2 >/dev/null; \
	else echo "warning: no fusermount and no apt-get: install FUSE (fuse3) yourself to use 'arrayfs mount'"; fi

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
FUZZ_TARGETS ?= file chunk transposed footer options tfrecord example

fuzz-seeds: ## seed corpora from small Google-written files, into fuzz/corpus/
	$(PY) fuzz/make_seeds.py

fuzz: fuzz-seeds ## run each atheris fuzz target for FUZZ_SECONDS (default 30); a finding fails
	FUZZ_SECONDS=$(FUZZ_SECONDS) PYTHON=$(PY) fuzz/run.sh $(FUZZ_TARGETS)

SOAK_MINUTES ?= 1

soak: ## readers cat records through a watching mount while its shards change; wrong bytes or a dead daemon fail
	$(PY) benchmarks/soak_mount.py --minutes $(SOAK_MINUTES)

lint:
	$(VENV)/bin/ruff check arrayfs tests benchmarks examples mount_cli.py fuzz

docs:
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf build dist site *.egg-info .pytest_cache fuzz/artifacts
