"""The Revox-compatible HTTP API (FastAPI), served by `outdial api` and the dev stack."""
