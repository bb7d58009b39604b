"""API keys: `Authorization: Bearer <key>`; a key belongs to an organization (and the user it was
issued to), and every object the API shows is scoped to that organization.

Keys are 32 random bytes (`odk_` + URL-safe base64); only their SHA-256 is stored.
"""

from __future__ import annotations

import os
import secrets
import uuid
from pathlib import Path
from typing import Annotated

from fastapi import Request, Security
from fastapi.security import HTTPBearer
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from activities.webhook_secrets import pin_webhook_secret
from api.context import ApiContext
from api.errors import ApiError
from api.keys import Principal, lookup_key
from models.settings import ConfigError, OrganizationId, Settings
from models.tables import (
    ApiKey,
    Database,
    PhoneNumberRecord,
    User,
    ensure_organization,
    hash_api_key,
    utcnow,
)

KEY_PREFIX = "odk_"


class ApiKeyBearer(HTTPBearer):
    """`Authorization: Bearer <key>` resolved to the caller's organization in one dependency, documented
    as the ApiKey security scheme: FastAPI solves one node on every request where it solved three (the
    key, the context, the lookup)."""

    async def __call__(self, request: Request) -> Principal:  # type: ignore[override]
        """The caller's organization; 401 if the key is missing, unknown or revoked."""
        credentials = await super().__call__(request)
        if credentials is None or not credentials.credentials:
            raise _unauthorized("missing API key: send 'Authorization: Bearer <key>'")
        context: ApiContext = request.app.state.context
        key = credentials.credentials
        principal = context.verified_keys.get(key)
        if principal is None:
            principal = await context.db(lookup_key, context.database, key)
            if principal is None:
                raise _unauthorized("invalid API key")
            context.verified_keys.put(key, principal)
        return principal


_SCHEME = {
    "scheme_name": "ApiKey",
    "description": "An outdial API key: `outdial apikey create`, or the one `outdial dev` prints.",
}
bearer = HTTPBearer(auto_error=False, **_SCHEME)  # the key as sent, for GET /auth-status (never a 401)


def _unauthorized(message: str) -> ApiError:
    return ApiError(401, "authentication_error", message)


Authenticated = Annotated[Principal, Security(ApiKeyBearer(auto_error=False, **_SCHEME))]


# --- issuing keys ------------------------------------------------------------------------------------------


def ensure_user(session: Session, organization_id: str, email: str) -> User:
    user = session.scalars(
        select(User).where(User.organization_id == organization_id, User.email == email)
    ).first()
    if user is None:
        user = User(id=f"user_{uuid.uuid4().hex[:16]}", organization_id=organization_id, email=email)
        session.add(user)
        session.flush()
    return user


class KeyHolder(BaseModel):
    """Who a key is issued to, within what the tables hold: PostgreSQL refuses a longer value (a
    traceback in the CLI), where SQLite would keep it."""

    organization_id: OrganizationId
    name: str = Field(min_length=1, max_length=200)
    email: str = Field(min_length=1, max_length=320)


class KeyOfAnother(ValueError):
    """A chosen key another organization holds: it authenticates as that organization."""


def issue_api_key(
    database: Database,
    organization_id: str,
    *,
    name: str = "default",
    email: str = "dev@localhost",
    key: str | None = None,
) -> str:
    """Create a key for the organization (created if new) and return it; only its hash is stored.
    Passing `key` registers a chosen key (e.g. OUTDIAL_DEV_API_KEY); registering it again is a no-op,
    and `KeyOfAnother` when another organization holds it.
    Raises pydantic's ValidationError for a holder the tables cannot hold (`KeyHolder`)."""
    KeyHolder(organization_id=organization_id, name=name, email=email)
    key = key or KEY_PREFIX + secrets.token_urlsafe(32)
    for _ in range(2):
        try:
            with database.session() as session:
                held = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))).first()
                if held is not None and held.organization_id != organization_id:
                    raise KeyOfAnother(f"the key is another organization's ({held.organization_id})")
                if held is not None:
                    return key
                ensure_organization(session, organization_id)
                user = ensure_user(session, organization_id, email)
                session.add(
                    ApiKey(
                        id=f"key_{uuid.uuid4().hex[:16]}",
                        organization_id=organization_id,
                        user_id=user.id,
                        name=name,
                        key_hash=hash_api_key(key),
                        prefix=key[:12],
                    )
                )
                session.commit()
                return key
        except IntegrityError:
            continue  # another process created the same organization or user: look again
    raise RuntimeError(f"could not create an API key for {organization_id}")


def api_keys_of(database: Database, organization_id: str) -> list[ApiKey]:
    """The organization's keys, oldest first (hashes and prefixes only: keys are never stored)."""
    with database.session() as session:
        query = select(ApiKey).where(ApiKey.organization_id == organization_id)
        return list(session.scalars(query.order_by(ApiKey.created_at, ApiKey.id)))


def revoke_api_key(database: Database, organization_id: str, key_id: str) -> ApiKey | None:
    """Revoke one of the organization's keys by id (idempotent); None if it has no such key. An API
    process that verified the key recently accepts it for up to `VerifiedKeys.ttl` seconds more."""
    with database.session() as session:
        record = session.get(ApiKey, key_id)
        if record is None or record.organization_id != organization_id:
            return None
        if record.revoked_at is None:
            record.revoked_at = utcnow()
            session.commit()
        return record


def ensure_phone_number(
    database: Database, organization_id: str, phone_number: str, trunk: str | None, label: str | None = None
) -> None:
    """The organization owns `phone_number` (idempotent), on `trunk` when one is given (the local
    stack's configured trunk: a corrected LIVEKIT_SIP_OUTBOUND_TRUNK_ID replaces the one recorded)."""
    with database.session() as session:
        ensure_organization(session, organization_id)
        exists = session.scalars(
            select(PhoneNumberRecord).where(
                PhoneNumberRecord.organization_id == organization_id,
                PhoneNumberRecord.phone_number == phone_number,
            )
        ).first()
        if exists is None:
            session.add(
                PhoneNumberRecord(
                    id=str(uuid.uuid4()),
                    organization_id=organization_id,
                    phone_number=phone_number,
                    label=label,
                    livekit_outbound_trunk_id=trunk,
                )
            )
        elif trunk is not None:
            exists.livekit_outbound_trunk_id = trunk
        session.commit()


def seed_dev_organization(settings: Settings, *, key: str | None = None) -> str:
    """The local stack's organization: its caller id (temporal-dev.yaml's default_from_phone_number, on
    the outbound trunk of the settings), its webhook secret (OUTDIAL_WEBHOOK_SECRET if set, else its own)
    and an API key, returned: OUTDIAL_DEV_API_KEY if set, else the one kept in the local stack's
    `api_key_file` by the last run, else a new one (then kept there)."""
    database = Database.for_url(settings.database_url)
    ensure_phone_number(
        database,
        settings.organization_id,
        settings.default_from_phone_number,
        settings.livekit_sip_outbound_trunk_id or None,
        label="dev stack default",
    )
    if settings.webhook_secret:  # OUTDIAL_WEBHOOK_SECRET signs the local organization's webhooks
        pin_webhook_secret(database, settings.organization_id, settings.webhook_secret)
    chosen = (key or os.environ.get("OUTDIAL_DEV_API_KEY") or "").strip() or None  # as a client sends it
    if chosen and _revoked(database, chosen):
        raise ConfigError(
            "OUTDIAL_DEV_API_KEY was revoked (outdial apikey revoke): set another, or unset it for a new one"
        )
    kept_in = Path(settings.local_stack.api_key_file)
    kept = None if chosen else _kept_dev_key(kept_in)
    if kept and _revoked(database, kept):  # revoked since the last run: a new one, kept instead
        kept = None
    try:
        key = issue_api_key(database, settings.organization_id, name="dev stack", key=chosen or kept)
    except KeyOfAnother as err:
        if chosen:
            raise ConfigError(f"OUTDIAL_DEV_API_KEY: {err}; set another, or unset it for a new one") from None
        # kept by a run as another organization (organization.id changed since): a new one, kept instead
        key = issue_api_key(database, settings.organization_id, name="dev stack")
    if not (os.environ.get("OUTDIAL_DEV_API_KEY") or "").strip():  # (a blank one chooses none: kept)
        _keep(kept_in, key)
    return key


def _keep(path: Path, key: str) -> None:
    """Write the key readable by its owner only, from the first byte (as the codec key file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file there before, of another mode
    with os.fdopen(descriptor, "w") as handle:
        handle.write(key + "\n")


def _revoked(database: Database, key: str) -> bool:
    with database.session() as session:
        record = session.scalars(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key))).first()
        return record is not None and record.revoked_at is not None


def _kept_dev_key(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None
