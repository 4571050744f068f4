"""Change control routes: a place's, a storage profile's and a site's controlled settings,
changed by QA as signed changes; the list of changes for oversight."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Path, Query, Request

from coldtrail.api import models, web
from coldtrail.api.erp_routes import OVERSIGHT, PREFIX, Deps
from coldtrail.compliance import profiles
from coldtrail.erp import changes
from coldtrail.erp.people import Role, User
from coldtrail.erp.signatures import Credentials
from coldtrail.erp.tx import Conn

Ident = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
_SIGNATURE = {"username", "password", "meaning", "reason"}
QA_ONLY = frozenset({Role.QA})
"""Change control is QA's alone: not even an admin signs a change of limits."""


def register(app: FastAPI, deps: Deps) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    Qa = Annotated[User, Depends(deps.allow(QA_ONLY))]
    Oversight = Annotated[User, Depends(deps.allow(OVERSIGHT))]
    signed: dict[int | str, dict[str, Any]] = {
        403: {"description": "the signature was refused (only QA signs a change)"},
        404: {"description": "a record named does not exist"},
        409: {"description": "the change breaks a rule (a range upside down, nothing changes)"},
        429: {"description": "too many password attempts from this address"},
    }

    def signed_change(
        request: Request, conn: Conn, user: User, subject: changes.Subject, subject_id: str,
        body: models.SignatureIn,
    ) -> changes.Change:  # fmt: skip
        request.app.state.password_guard(request)
        values = {k: getattr(body, k) for k in body.model_fields_set - _SIGNATURE}
        return changes.change(
            conn, user.username, subject, subject_id, values,
            credentials=Credentials(body.username, body.password, web.client(request)),
            meaning=body.meaning, reason=body.reason, at=deps.clock.now(),
            known_profiles=set(profiles(request.app.state.profiles_dir)),
        )  # fmt: skip

    @app.put(PREFIX + "/locations/{location_id}/limits", tags=["change control"],
             responses=signed)  # fmt: skip
    def change_location_limits(
        location_id: Ident, body: models.LocationLimitsIn, conn: Db, user: Qa, request: Request
    ) -> changes.Change:
        """Change a place's range or alarm delay: QA signs it with a reason (password again,
        meaning); the change keeps the values before and after."""
        return signed_change(request, conn, user, "location", location_id, body)

    @app.put(PREFIX + "/profiles/{profile_id}/limits", tags=["change control"],
             responses=signed)  # fmt: skip
    def change_profile_limits(
        profile_id: Ident, body: models.ProfileLimitsIn, conn: Db, user: Qa, request: Request
    ) -> changes.Change:
        """Change a storage profile's limits, delay, budget or release rule, signed by QA."""
        return signed_change(request, conn, user, "temperature_profile", profile_id, body)

    @app.put(PREFIX + "/products/{gtin}/profile", tags=["change control"], responses=signed)
    def change_product_profile(
        gtin: Annotated[str, Path(pattern=r"^[0-9]{14}$")], body: models.ProductProfileIn,
        conn: Db, user: Qa, request: Request,
    ) -> changes.Change:  # fmt: skip
        """Keep a product under another storage profile (its range and delay), signed by QA."""
        return signed_change(request, conn, user, "product", gtin, body)

    @app.put(PREFIX + "/sites/{site_id}/compliance-profile", tags=["change control"],
             responses=signed)  # fmt: skip
    def change_site_profile(
        site_id: Ident, body: models.SiteProfileIn, conn: Db, user: Qa, request: Request
    ) -> changes.Change:
        """Hold a site to another compliance regime (a profile's id), signed by QA."""
        return signed_change(request, conn, user, "site", site_id, body)

    @app.get(PREFIX + "/changes", tags=["change control"])
    def list_changes(
        conn: Db,
        _: Oversight,
        since: datetime | None = None,
        site: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 1000,
    ) -> list[changes.Change]:
        """Signed changes, oldest first: after ``since``, of ``site`` and of what no site
        owns (storage profiles)."""
        return changes.list_changes(conn, since, site, limit)
