"""Webhook signing secrets, one per organization, kept in the database beside it.

The secret is made when the organization is (models.tables.new_webhook_secret) and read by the webhook
activity at send time, so it never travels through workflow history. Rotating makes a new one; the
previous one keeps signing for `ROTATION_GRACE` (the header then carries two `v1=` signatures, as
Stripe's does while a secret rolls), so receivers can switch without dropping a delivery.

The local stack's organization takes OUTDIAL_WEBHOOK_SECRET when it is set (the contract of DESIGN.md):
that secret is pinned, rotating it means changing the variable.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from pydantic import BaseModel, Field

from models.settings import Settings
from models.tables import Database, Organization, ensure_organization, new_webhook_secret, utcnow

ROTATION_GRACE = timedelta(hours=24)


class WebhookSecretPinned(RuntimeError):
    """The organization's secret comes from OUTDIAL_WEBHOOK_SECRET and cannot be rotated here."""


class WebhookSecretInfo(BaseModel):
    """What `outdial webhook-secret show|rotate` and `GET /webhook-secret` tell the organization."""

    organization_id: str
    webhook_secret: str = Field(repr=False)
    rotated_at: datetime | None = None
    previous_secret_valid_until: datetime | None = None  # the previous secret still signs until then
    pinned_by_environment: bool = False


def _pinned(settings: Settings, organization_id: str) -> str | None:
    return settings.webhook_secret if organization_id == settings.organization_id else None


def _grace_end(organization: Organization, now: datetime) -> datetime | None:
    rotated = organization.webhook_secret_rotated_at
    if organization.previous_webhook_secret and rotated and now < rotated + ROTATION_GRACE:
        return rotated + ROTATION_GRACE
    return None


def signing_secrets(settings: Settings, database: Database, organization_id: str) -> list[str]:
    """The secrets that sign this organization's webhooks now: the current one first (empty: none)."""
    pinned = _pinned(settings, organization_id)
    if pinned:
        return [pinned]
    with database.session() as session:
        organization = session.get(Organization, organization_id)
        if organization is None or not organization.webhook_secret:
            return []
        previous = organization.previous_webhook_secret if _grace_end(organization, utcnow()) else None
        return [organization.webhook_secret] + ([previous] if previous else [])


def _info(settings: Settings, organization: Organization, now: datetime) -> WebhookSecretInfo:
    pinned = _pinned(settings, organization.id)
    return WebhookSecretInfo(
        organization_id=organization.id,
        webhook_secret=pinned or organization.webhook_secret or "",
        rotated_at=organization.webhook_secret_rotated_at,
        previous_secret_valid_until=None if pinned else _grace_end(organization, now),
        pinned_by_environment=bool(pinned),
    )


def show_webhook_secret(settings: Settings, database: Database, organization_id: str) -> WebhookSecretInfo:
    """The organization's secret (the organization is created, with its secret, if new)."""
    with database.session() as session:
        organization = ensure_organization(session, organization_id)
        if not organization.webhook_secret:  # a row written before secrets existed and not migrated
            organization.webhook_secret = new_webhook_secret()
        session.commit()
        return _info(settings, organization, utcnow())


def rotate_webhook_secret(settings: Settings, database: Database, organization_id: str) -> WebhookSecretInfo:
    """A new secret; the old one keeps signing during ROTATION_GRACE so receivers can switch."""
    if _pinned(settings, organization_id):
        raise WebhookSecretPinned(
            f"the webhook secret of {organization_id} is OUTDIAL_WEBHOOK_SECRET: change the variable instead"
        )
    with database.session() as session:
        organization = ensure_organization(session, organization_id)
        now = utcnow()
        organization.previous_webhook_secret = organization.webhook_secret
        organization.webhook_secret = new_webhook_secret()
        organization.webhook_secret_rotated_at = now
        session.commit()
        return _info(settings, organization, now)


def pin_webhook_secret(database: Database, organization_id: str, secret: str) -> None:
    """Store OUTDIAL_WEBHOOK_SECRET as the local organization's secret, so `show` and storage agree."""
    with database.session() as session:
        organization = ensure_organization(session, organization_id)
        if organization.webhook_secret != secret:
            organization.webhook_secret = secret
            organization.previous_webhook_secret = None
            organization.webhook_secret_rotated_at = None
        session.commit()


class DatabaseWebhookSecrets:
    """The webhook activity's view: secrets looked up by organization at send time."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    async def signing_secrets(self, organization_id: str) -> list[str]:
        database = Database.for_url(self.settings.database_url)
        return await asyncio.to_thread(signing_secrets, self.settings, database, organization_id)
