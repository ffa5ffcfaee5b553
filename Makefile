# The README's two commands. Both set up everything first (scripts/bootstrap is idempotent).
.PHONY: setup demo test compile codegen

setup:
	./scripts/bootstrap

demo: setup
	.venv/bin/fedledger demo $(ARGS)

test: setup
	.venv/bin/python -m pytest $(PYTEST_ARGS)

compile: setup
	.venv/bin/fedledger compile

codegen: compile
	.venv/bin/fedledger codegen
