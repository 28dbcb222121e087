# `make demo`: the bot in a terminal chat against a local, real Prometheus + Alertmanager.
# `make test`: lint, types and the whole test suite on the real servers.
VENV ?= .venv
PYTHON ?= python3

.PHONY: demo test bench eval clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	@scripts/servers.sh || true
	$(VENV)/bin/opsbot demo

test: $(VENV)/.installed
	VENV=$(VENV) scripts/test.sh

# `make bench`: one table (bench/RESULTS.md), on SQLite and the local PostgreSQL, ~8 minutes
bench: $(VENV)/.installed
	@scripts/servers.sh >/dev/null || true
	OPSBOT_TEST_POSTGRES_URL=$${OPSBOT_TEST_POSTGRES_URL:-$$(scripts/servers.sh postgres || true)} \
		$(VENV)/bin/python bench/run.py

eval: $(VENV)/.installed
	$(VENV)/bin/opsbot eval eval/routing-dev.yaml
	$(VENV)/bin/opsbot eval eval/routing-extra.yaml

clean:
	rm -rf $(VENV) charts .pytest_cache .mypy_cache .ruff_cache

# `make chart`: helm lint/template, kubernetes-validate, checkov, promtool on the chart (tools
# fetched into build/tools). `make image`: build the image (buildah from a local Debian base,
# or docker), then run it (tests/test_image.py). Both also run in `make test`.
.PHONY: chart image
chart: $(VENV)/.installed
	VENV=$(VENV) scripts/chart.sh

image: $(VENV)/.installed
	scripts/image.sh
	$(VENV)/bin/pytest -q -p no:cacheprovider tests/test_image.py
