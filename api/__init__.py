"""fedledger's REST API (FastAPI): participants, auditors, operators. Create it with ``api.app.create_app``."""
