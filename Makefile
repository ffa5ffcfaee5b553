# The README's two commands. Both set up everything first (scripts/bootstrap is idempotent).
.PHONY: setup demo test compile codegen devnet-up devnet-status devnet-down devnet-demo

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

# The devnet stack for operators: Hardhat node + Kubo daemon on loopback (state, logs, manifest in .fedledger/devnet)
devnet-up: setup
	.venv/bin/fedledger devnet up $(ARGS)

devnet-status: setup
	.venv/bin/fedledger devnet status

devnet-demo: setup
	.venv/bin/fedledger demo --stack devnet $(ARGS)

devnet-down: setup
	.venv/bin/fedledger devnet down $(ARGS)
