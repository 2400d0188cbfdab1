# Two commands do everything on a fresh machine: `make demo` and `make test`.
# The venv is rebuilt whenever pyproject.toml changes (the stamp records that install).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell sha1sum pyproject.toml | cut -c1-12)
TORCH_PINS := torch==2.14.1 torchvision==0.29.1
DEMO_DIR ?= runs/demo

CHROMIUM := /usr/bin/chromium
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: demo test venv lint clean chromium

venv: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# torch first, pinned: on this machine it comes from local disk, elsewhere from the registry.
	$(BIN)/python -m pip install --quiet $(TORCH_PINS)
	$(BIN)/python -m pip install --quiet -e '.[dev,cluster]'
	rm -f $(VENV)/.installed-*
	touch $@

demo: $(STAMP)
	$(BIN)/sonosynth run configs/demo.yaml --out $(DEMO_DIR)

# The reader-study browser test drives Debian's Chromium (playwright cannot download a browser here).
chromium:
	@test -x $(CHROMIUM) || { command -v apt-get >/dev/null 2>&1 \
	  && $(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq chromium; } \
	  || echo "note: $(CHROMIUM) missing and apt-get unavailable: the browser test will be skipped"

test: $(STAMP) chromium
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks

clean:
	rm -rf $(VENV) runs build src/*.egg-info
