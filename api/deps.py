"""Dependencies shared by the routes (FastAPI ``Annotated`` style)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from api.errors import APIError
from core.db.models import Tenant
from core.db.session import session_factory
from core.jobs.tenants import authenticate
from core.settings import Settings
from core.storage import Storage, get_storage

# Cheap dependencies are ``async`` so FastAPI runs them on the event loop instead of hopping to the thread
# pool for each (the hops, not the work, dominated a status poll's latency).


async def get_app_settings(request: Request) -> Settings:
    return request.app.state.settings


SettingsDep = Annotated[Settings, Depends(get_app_settings)]


async def get_db(settings: SettingsDep) -> AsyncIterator[Session]:
    # Opening a session does no I/O (a connection is taken at the first query, in the route's thread);
    # closing only hands the connection back to the pool, so neither needs a thread of its own.
    session = session_factory(settings)()
    try:
        yield session
    finally:
        session.close()


SessionDep = Annotated[Session, Depends(get_db)]


async def get_app_storage(settings: SettingsDep) -> Storage:
    return get_storage(settings)


StorageDep = Annotated[Storage, Depends(get_app_storage)]

_bearer = HTTPBearer(auto_error=False, description="an API key from `gisp keys create`")


BearerDep = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]


def tenant_of(session: Session, credentials: HTTPAuthorizationCredentials | None) -> Tenant:
    """The tenant owning the bearer key, or 401."""
    challenge = {"WWW-Authenticate": "Bearer"}
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise APIError(401, "unauthorized", "missing bearer API key", headers=challenge)
    tenant = authenticate(session=session, key=credentials.credentials)
    if tenant is None:
        raise APIError(401, "unauthorized", "invalid or revoked API key", headers=challenge)
    return tenant


def get_current_tenant(session: SessionDep, credentials: BearerDep) -> Tenant:
    return tenant_of(session, credentials)


CurrentTenant = Annotated[Tenant, Depends(get_current_tenant)]
