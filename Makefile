# The README's two commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LINTED := $(wildcard scalekit tests examples benchmarks scripts)

.PHONY: demo cluster cluster-stop test bench lint format sysdeps venv clean

# The guestbook on embedded defaults (sqlite, disk cache, files under examples/app/data).
demo: $(INSTALLED)
	$(VENV)/bin/scalekit zip-static --brotli examples/app/static
	@echo "scalekit demo on http://127.0.0.1:8000/ (stop with Ctrl-C)"
	$(VENV)/bin/gunicorn -c examples/gunicorn.conf.py

# Three nodes behind haproxy with Redis, memcached, PostgreSQL + replica, on loopback.
cluster: $(INSTALLED) sysdeps
	$(PY) -m examples.cluster start

cluster-stop: $(INSTALLED)
	$(PY) -m examples.cluster stop

test: $(INSTALLED) sysdeps
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(INSTALLED) sysdeps
	$(PY) -m pip install --quiet -e '.[all,bench]'
	@set -e; for script in benchmarks/*.py; do \
		[ -e "$$script" ] || { echo "no benchmarks yet"; break; }; \
		echo "== $$script"; $(PY) "$$script"; done

# ruff, then the import rule (floors, pieces apart, no private names): tests/test_layers.py
lint: $(INSTALLED)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(PY) -m pytest -q tests/test_layers.py

format: $(INSTALLED)
	-$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

venv: $(INSTALLED)

$(PY):
	$(PYTHON) -m venv $(VENV)

# `scalekit` on PyPI is another project that imports as scalekit, and this one's name before
# it became scalekit-wsgi: either would shadow or break the editable install, so it goes first.
$(INSTALLED): setup.cfg pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --yes scalekit
	$(PY) -m pip install --quiet -e '.[all,test]'
	touch $@

# The servers the tests start privately: redis-server, memcached, PostgreSQL, MariaDB, haproxy;
# wrk for benchmarks/cluster.py.
sysdeps:
	@missing=""; \
	command -v redis-server >/dev/null || missing="$$missing redis-server"; \
	command -v memcached >/dev/null || missing="$$missing memcached"; \
	[ -x /usr/sbin/nginx ] || missing="$$missing nginx"; \
	[ -e /usr/lib/nginx/modules/ngx_http_brotli_static_module.so ] \
		|| missing="$$missing libnginx-mod-http-brotli-static"; \
	[ -x /usr/sbin/apache2 ] || missing="$$missing apache2"; \
	command -v chromium >/dev/null || missing="$$missing chromium"; \
	[ -x /usr/sbin/haproxy ] || missing="$$missing haproxy"; \
	command -v wrk >/dev/null || missing="$$missing wrk"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 \
		|| missing="$$missing postgresql"; \
	[ -x /usr/sbin/mariadbd ] || missing="$$missing mariadb-server"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends $$missing; \
	fi

clean:
	-[ ! -e .cluster ] || [ ! -x $(PY) ] || $(PY) -m examples.cluster stop
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache examples/app/data .cluster
