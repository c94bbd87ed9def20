PY ?= .venv/bin/python

.PHONY: setup run demo test test-fast lint format proto bench screenshots package-linux package-macos

setup:
	./scripts/setup.sh

run: setup
	$(PY) -m app

demo: setup
	$(PY) -m engine.cli.main demo

test:
	./scripts/test.sh

test-fast:
	$(PY) -m pytest -m "not slow" -q

lint:
	$(PY) -m ruff check . && $(PY) -m ruff format --check .

format:
	$(PY) -m ruff format . && $(PY) -m ruff check --fix .

proto:
	$(PY) scripts/gen_proto.py

bench:
	$(PY) bench/lora_vs_mlx_lm.py

screenshots:
	$(PY) scripts/screenshots.py

package-linux:
	./packaging/build_linux.sh

package-macos:
	./packaging/build_macos.sh
