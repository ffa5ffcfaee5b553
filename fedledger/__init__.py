"""fedledger: the composition root. Wires chain/, storage/ and trainer/ together for the CLI and the API."""
