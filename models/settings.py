"""Runtime configuration: environment first, then temporal-dev.yaml, then built-in defaults (12-factor)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field

DEFAULT_CONFIG_FILE = "temporal-dev.yaml"


class DevServerSettings(BaseModel):
    db_filename: str = ".outdial/temporal.db"
    ip: str = "127.0.0.1"
    port: int = 7233
    ui_port: int = 8233
    log_level: str = "warn"


class Settings(BaseModel):
    temporal_address: str = "localhost:7233"
    temporal_namespace: str = "default"
    task_queue: str = "call-orders"
    dev_server: DevServerSettings = Field(default_factory=DevServerSettings)
    search_attributes: dict[str, str] = Field(default_factory=dict)
    telephony: Literal["simulated", "livekit"] = "simulated"
    analyzer: Literal["simulated", "openai"] = "simulated"
    database_url: str = "sqlite:///.outdial/outdial.db"
    organization_id: str = "org_local"
    default_from_phone_number: str = "+33159000000"

    @classmethod
    def load(cls, config_file: str | Path | None = None, env: dict[str, str] | None = None) -> Settings:
        """Read `config_file` (default: $OUTDIAL_CONFIG or ./temporal-dev.yaml, if present), then env."""
        env = dict(os.environ if env is None else env)
        path = Path(config_file or env.get("OUTDIAL_CONFIG") or DEFAULT_CONFIG_FILE)
        raw: dict[str, Any] = yaml.safe_load(path.read_text()) or {} if path.is_file() else {}
        temporal = raw.get("temporal", {})
        providers = raw.get("providers", {})
        organization = raw.get("organization", {})
        values: dict[str, Any] = {
            "temporal_address": env.get("TEMPORAL_ADDRESS") or temporal.get("address"),
            "temporal_namespace": env.get("TEMPORAL_NAMESPACE") or temporal.get("namespace"),
            "task_queue": env.get("OUTDIAL_TASK_QUEUE") or temporal.get("task_queue"),
            "dev_server": temporal.get("dev_server"),
            "search_attributes": raw.get("search_attributes"),
            "telephony": env.get("OUTDIAL_TELEPHONY") or providers.get("telephony"),
            "analyzer": env.get("OUTDIAL_ANALYZER")
            or ("openai" if env.get("OPENAI_API_KEY") else None)
            or providers.get("analyzer"),
            "database_url": env.get("OUTDIAL_DATABASE_URL") or raw.get("database_url"),
            "organization_id": organization.get("id"),
            "default_from_phone_number": organization.get("default_from_phone_number"),
        }
        return cls.model_validate({k: v for k, v in values.items() if v is not None})
