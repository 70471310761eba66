"""Tenants and their API keys."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.db.base import new_id, utcnow
from core.db.models import ApiKey, Tenant
from core.security import generate_api_key, hash_api_key, key_display_prefix


def get_or_create_tenant(*, session: Session, name: str) -> Tenant:
    tenant = session.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(id=new_id("ten"), name=name)
        session.add(tenant)
        session.flush()
    return tenant


def create_api_key(*, session: Session, tenant_name: str) -> tuple[str, ApiKey]:
    """Create a key for the tenant (created on first use); the clear key is returned once and never stored."""
    tenant = get_or_create_tenant(session=session, name=tenant_name)
    key = generate_api_key()
    record = ApiKey(
        id=new_id("key"), tenant_id=tenant.id, key_hash=hash_api_key(key), prefix=key_display_prefix(key)
    )
    session.add(record)
    session.flush()
    return key, record


def revoke_api_key(*, session: Session, key: str) -> bool:
    """Revoke by the clear key; False when no active key matches."""
    record = session.scalar(select(ApiKey).where(ApiKey.key_hash == hash_api_key(key)))
    if record is None or record.revoked_at is not None:
        return False
    record.revoked_at = utcnow()
    session.flush()
    return True


def authenticate(*, session: Session, key: str) -> Tenant | None:
    """The tenant owning an active key, or None (unknown and revoked keys look the same to the caller)."""
    return session.scalar(
        select(Tenant)
        .join(ApiKey, ApiKey.tenant_id == Tenant.id)
        .where(ApiKey.key_hash == hash_api_key(key), ApiKey.revoked_at.is_(None))
    )
