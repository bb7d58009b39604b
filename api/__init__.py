"""The Revox-compatible HTTP API (FastAPI): `create_app(settings)`, served by `outdial api`/`outdial dev`."""

from api.app import create_app

__all__ = ["create_app"]
