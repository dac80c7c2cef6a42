# The README's two commands: `make demo` and `make test`. Both set up what they need.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
LINTED := $(wildcard scalekit tests examples benchmarks scripts)

# What each target installs into $(VENV): scalekit with these extras (the demo and the
# cluster: no test tools, no benchmark baselines).
APP := $(VENV)/.extras-all
DEV := $(VENV)/.extras-all,test
BENCHES := $(VENV)/.extras-all,bench

# The apt-get packages each target needs, as package[=the command or file that shows it is
# installed; default: a command named like the package].
SYSDEPS_cluster := redis-server memcached postgresql=initdb haproxy
SYSDEPS_test := $(SYSDEPS_cluster) mariadb-server=mariadbd nginx apache2 chromium openssl \
	libnginx-mod-http-brotli-static=/usr/lib/nginx/modules/ngx_http_brotli_static_module.so
SYSDEPS_bench := $(SYSDEPS_cluster) mariadb-server=mariadbd wrk npm

.PHONY: demo cluster cluster-stop test bench lint format venv clean \
	sysdeps sysdeps-cluster sysdeps-test sysdeps-bench

# The guestbook on embedded defaults (sqlite, disk cache, files under examples/app/data),
# with a task worker started and stopped by gunicorn (SCALEKIT_TASK_WORKERS).
demo: $(APP)
	$(VENV)/bin/scalekit zip-static --brotli examples/app/static
	@echo "scalekit demo on http://$${SCALEKIT_BIND:-127.0.0.1:8000}/ (stop with Ctrl-C)"
	SCALEKIT_TASK_WORKERS=$${SCALEKIT_TASK_WORKERS:-1} $(VENV)/bin/gunicorn -c examples/gunicorn.conf.py

# Three nodes behind haproxy with Redis, memcached, PostgreSQL + replica, on loopback.
# make cluster REDIS=sentinel: Redis as examples/sentinel/ (a primary, a replica and three
# Sentinels), every Redis user of the demo on redis+sentinel://; REDIS=cluster: a Redis
# Cluster as examples/redis-cluster/ (six nodes), on redis+cluster://.
cluster: $(APP) sysdeps-cluster
	$(PY) -m examples.cluster start$(if $(REDIS), --redis $(REDIS))

cluster-stop: $(APP)
	$(PY) -m examples.cluster stop

test: $(DEV) sysdeps-test
	$(PY) -m pytest $(PYTEST_ARGS)

# make bench [BENCH="cache tickets"] [ARGS=--quick]: the benchmarks named (default: every
# script in benchmarks/), each run with ARGS.
BENCH ?= $(wildcard benchmarks/*.py)
bench: $(BENCHES) sysdeps-bench
	@set -e; for name in $(basename $(notdir $(BENCH))); do \
		script=benchmarks/$$name.py; \
		[ -e "$$script" ] || { echo "no benchmark $$script"; exit 2; }; \
		echo "== $$script $(ARGS)"; $(PY) "$$script" $(ARGS); done

# ruff, then the import rule (floors, pieces apart, no private names): tests/test_layers.py
lint: $(DEV)
	$(VENV)/bin/ruff check $(LINTED)
	$(VENV)/bin/ruff format --check $(LINTED)
	$(PY) -m pytest -q tests/test_layers.py

format: $(DEV)
	-$(VENV)/bin/ruff check --fix $(LINTED)
	$(VENV)/bin/ruff format $(LINTED)

venv: $(DEV)

# Debian's python3 has no ensurepip (no venv with pip) until python3.X-venv is installed.
$(PY):
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
		venv=$$($(PYTHON) -c 'import sys; print("python3.%d-venv" % sys.version_info[1])'); \
		echo "$(PYTHON) cannot make a venv with pip: installing $$venv"; \
		$(call apt-install,$$venv); }
	$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); exit 1; }

# One stamp per set of extras, redone when setup.cfg changes. `scalekit` on PyPI is another
# project that imports as scalekit, and this one's name before it became scalekit-wsgi:
# either would shadow or break the editable install, so it goes first.
$(VENV)/.extras-%: setup.cfg pyproject.toml | $(PY)
	@echo "installing scalekit-wsgi[$*] into $(VENV) (pip downloads what is missing)"
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip uninstall --quiet --quiet --yes scalekit
	$(PY) -m pip install --quiet -e '.[$*]'
	touch $@

# Each target's apt-get packages, installed if missing (as root, or through sudo);
# `make sysdeps` installs them all.
sysdeps: sysdeps-test sysdeps-bench
sysdeps-cluster sysdeps-test sysdeps-bench:
	$(call install-missing,$(SYSDEPS_$(@:sysdeps-%=%)))

apt-install = $(SUDO) apt-get update -qq && $(SUDO) env DEBIAN_FRONTEND=noninteractive \
	apt-get install -y -qq --no-install-recommends $(1)

define install-missing
@PATH="$$PATH:/usr/sbin:/sbin$$(printf ':%s' /usr/lib/postgresql/*/bin)"; missing=""; \
for dep in $(1); do command -v "$${dep#*=}" >/dev/null || [ -e "$${dep#*=}" ] \
	|| missing="$$missing $${dep%%=*}"; done; \
[ -z "$$missing" ] || { echo "installing$$missing"; $(call apt-install,$$missing); }
endef

clean:
	-[ ! -e .cluster ] || [ ! -x $(PY) ] || $(PY) -m examples.cluster stop
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache examples/app/data .cluster
