"""HTTP API (FastAPI). Arrives with the participants/auditors/operators issue."""
