# The two entry points of the README; both set up what they need first.
.PHONY: setup probes demo ui test lint layouts clean stack-start stack-stop test-servers

setup:
	./scripts/setup.sh

probes:
	$(MAKE) -C probes

demo: setup
	./scripts/demo.sh

ui: setup   # the demo's recording in the web UI; runs the demo first when there is none
	test -d "$${KPROBE_DEMO_DATA:-/tmp/kprobe-demo}/chdb" || ./scripts/demo.sh
	.venv/bin/kprobe serve --data "$${KPROBE_DEMO_DATA:-/tmp/kprobe-demo}"

test: setup
	.venv/bin/ruff check .
	.venv/bin/python -m kprobe.schemas.gen_layouts --check
	.venv/bin/python -m pytest -q -x -rsxX --durations=15 tests

lint:
	.venv/bin/ruff check .

layouts:
	.venv/bin/python -m kprobe.schemas.gen_layouts


clean:
	$(MAKE) -C probes clean
	$(MAKE) -C replay clean

stack-start:
	deploy/stack.sh start all

stack-stop:
	deploy/stack.sh stop all

test-servers: setup
	.venv/bin/python -m pytest -q -m servers tests
