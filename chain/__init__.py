"""Ledger layer: compile, deploy, typed contract gateways, transactions and events. Knows nothing about torch."""
