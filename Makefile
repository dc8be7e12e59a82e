# The two entry points of the README; both set up what they need first.
.PHONY: setup probes demo test lint layouts bench clean

setup:
	./scripts/setup.sh

probes:
	$(MAKE) -C probes

demo: setup
	./scripts/demo.sh

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m kprobe.schemas.gen_layouts --check
	.venv/bin/python -m pytest -q -x --durations=15 tests

lint:
	.venv/bin/ruff check .

layouts:
	.venv/bin/python -m kprobe.schemas.gen_layouts

bench: setup
	./bench/run_all.sh

clean:
	$(MAKE) -C probes clean
