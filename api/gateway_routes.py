"""Routes of edge gateways, for admins: each gateway's site (the sensors it may report for),
how it behaves (what ingest kept aside from it, its dead letters), and the readings kept aside.

A gateway reports only for the sensors placed at a location of its site; the rest is kept
aside, whole, with the rule that kept it (``GET /kept-aside``): a misconfigured or stolen
gateway shows here, not silently. Moving or disabling a gateway tells the broker at once when
the API has the broker's admin account (``COLDTRAIL_MQTT_ADMIN_PASSWORD``).

No `from __future__ import annotations`: FastAPI reads these annotations at run time.
"""

from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from coldtrail.api import models
from coldtrail.api.erp_routes import ADMIN, PREFIX, Deps
from coldtrail.deploy import dynsec
from coldtrail.erp import gateways
from coldtrail.erp.people import User
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import TransportError
from coldtrail.mqtt import MqttOptions

Ident = Annotated[str, Path(pattern=r"^[A-Za-z0-9_.-]{1,64}$")]
Rule = Literal[
    "unknown_sensor", "not_at_site", "gateway_site", "gateway_disabled", "conflicting_resend"
]


class GatewayIn(models.RequestModel):
    """What an admin may change of a gateway: its site (it then reports for the sensors
    placed there, under that site's topic) and whether it may connect."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"site": "wh2", "disabled": False}]})
    site: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_.-]{1,64}$")
    disabled: bool | None = None


class GatewayDetail(BaseModel):
    gateway: gateways.Gateway
    kept_aside: list[gateways.KeptAside] = Field(description="its latest kept-aside readings")
    dead_letters: list[gateways.DeadLetter] = Field(description="its latest dead letters")


class GatewayChanged(BaseModel):
    gateway: gateways.Gateway
    broker: str = Field(
        description="`updated` when the broker took the change at once; otherwise why not "
        "(the change is recorded either way and reaches the broker at its next start)"
    )


def _tell_broker(admin: MqttOptions | None, commands: list[dict[str, Any]]) -> str:
    if not commands:
        return "updated"
    if admin is None:
        return "not told: the API has no broker admin account (COLDTRAIL_MQTT_ADMIN_PASSWORD)"
    try:
        dynsec.send(admin, commands)
    except TransportError as exc:
        return f"not told: {exc}"
    return "updated"


def change_gateway(
    conn: Conn,
    actor: str,
    gateway_id: str,
    body: GatewayIn,
    *,
    admin: MqttOptions | None,
    topic_root: str,
) -> GatewayChanged:
    """Move a gateway to another site, or disable or enable it, and tell the broker (for the
    API's route and the console's form alike)."""
    commands: list[dict[str, Any]] = []
    with acting(conn, actor):
        before = gateways.get(conn, gateway_id)
        if body.site is not None and body.site != before.site_id:
            gateways.move(conn, gateway_id, body.site)
            commands += dynsec.move_gateway(topic_root, gateway_id, before.site_id, body.site)
        if body.disabled is not None and body.disabled != before.disabled:
            gateways.set_disabled(conn, gateway_id, body.disabled)
            commands += dynsec.set_disabled(gateway_id, body.disabled)
    broker = _tell_broker(admin, commands)
    return GatewayChanged(gateway=gateways.get(conn, gateway_id), broker=broker)


def register(app: FastAPI, deps: Deps, admin: MqttOptions | None, topic_root: str) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    Admin = Annotated[User, Depends(deps.allow(ADMIN))]
    refusals: dict[int | str, dict[str, Any]] = {
        404: {"description": "no such gateway or site"},
        409: {"description": "the change is not allowed"},
    }

    @app.get(PREFIX + "/gateways", tags=["gateways"])
    def list_gateways(conn: Db, _: Admin) -> list[gateways.Gateway]:
        """Every gateway: its site, when last heard, the sensors placed at its site now, and
        what ingest kept aside from it or dead-lettered over the last day."""
        return gateways.list_all(conn)

    @app.get(PREFIX + "/gateways/{gateway_id}", tags=["gateways"], responses=refusals)
    def get_gateway(gateway_id: Ident, conn: Db, _: Admin) -> GatewayDetail:
        return GatewayDetail(
            gateway=gateways.get(conn, gateway_id),
            kept_aside=gateways.kept_aside(conn, gateway_id=gateway_id, limit=20),
            dead_letters=gateways.dead_letters(conn, gateway_id),
        )

    @app.put(PREFIX + "/gateways/{gateway_id}", tags=["gateways"], responses=refusals)
    def put_gateway(gateway_id: Ident, body: GatewayIn, conn: Db, user: Admin) -> GatewayChanged:
        """Move a gateway to another site, or disable or enable it."""
        return change_gateway(
            conn, user.username, gateway_id, body, admin=admin, topic_root=topic_root
        )

    @app.get(PREFIX + "/kept-aside", tags=["gateways"])
    def list_kept_aside(
        conn: Db,
        _: Admin,
        gateway: Annotated[str | None, Query(pattern=r"^[A-Za-z0-9_.-]{1,64}$")] = None,
        rule: Rule | None = None,
        pending: Annotated[
            bool, Query(description="only those not released (still outside the record)")
        ] = False,
        before: Annotated[int, Query(ge=1, description="return rows before this id")] = 2**63 - 1,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[gateways.KeptAside]:
        """Readings ingest did not store, newest first, each with the rule that kept it aside:
        an unknown sensor, a sensor not placed at the gateway's site when it measured, a
        gateway at the wrong site or disabled, a resend that disagrees with the record."""
        return gateways.kept_aside(
            conn, gateway_id=gateway, rule=rule, pending=pending, before=before, limit=limit
        )
