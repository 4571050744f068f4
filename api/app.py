"""The FastAPI application. Every route names the roles that may call it.

No `from __future__ import annotations` here: FastAPI reads the dependency aliases built
inside create_app at run time.
"""

import asyncio
import functools
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import psycopg
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import OAuth2PasswordBearer, OAuth2PasswordRequestForm
from psycopg_pool import ConnectionPool, PoolTimeout

from coldtrail import __version__, console
from coldtrail.api import (
    account_routes,
    auth,
    change_routes,
    erp_routes,
    examples,
    gateway_routes,
    limits,
    masterdata_routes,
    models,
    record_routes,
    rules_routes,
    stream_routes,
    validation_routes,
    web,
)
from coldtrail.api import queries as q
from coldtrail.api.limits import BodyLimit, Gate
from coldtrail.api.live import LiveBuilder, LiveSnapshots
from coldtrail.api.stream import StreamHub
from coldtrail.api.throttle import Throttle
from coldtrail.clock import Clock, SystemClock
from coldtrail.erp import audit, people
from coldtrail.erp.people import Role, User
from coldtrail.erp.tx import acting
from coldtrail.errors import (
    AccountLocked,
    NotFound,
    PayloadError,
    PreconditionFailed,
    RecordError,
    SignatureRefused,
)
from coldtrail.mqtt import MqttOptions

log = logging.getLogger(__name__)
PREFIX = "/api/v1"
ALL_ROLES = frozenset(Role)
POOL_SIZE = 8
USERNAME = re.compile(r"[a-z0-9_.-]{1,64}")
"""What a user name may be (the users table's CHECK)."""
GUESSES_PER_MINUTE = 10.0
GUESS_BURST = 10
"""Password attempts (logins and signatures) one client address may make: 10 at once, then
10 a minute."""


WRITERS = frozenset({Role.ADMIN, Role.LOGISTICS, Role.QA})
Conn = psycopg.Connection[tuple[Any, ...]]


@dataclass(frozen=True)
class ApiConfig:
    database_url: str
    secret_key: str
    token_ttl_s: int = 900
    admin_password: str | None = None
    stale_after_s: float = 300.0
    """A sensor whose latest reading is older than this shows as offline (GSP: 1 min refresh)."""
    mqtt: MqttOptions | None = None
    """The broker the push stream reads (account ``coldtrail-api``); no stream without it."""
    topic_root: str = "coldtrail"
    stream_keepalive_s: float = 15.0
    """A comment line goes to a quiet stream this often, so proxies keep it open."""
    live_max_age_s: float = 2.0
    """A live document younger than this is served again instead of built anew (0: never)."""
    mqtt_admin: MqttOptions | None = None
    """The broker as its admin account: gateway changes reach a running broker at once."""
    guesses_per_minute: float = GUESSES_PER_MINUTE
    guess_burst: int = GUESS_BURST
    records_at_once: int = 2
    """Records built and sent at once (a year of a room's readings holds ~230 MB until sent);
    more wait up to ``record_wait_s`` and are then a 503."""
    record_wait_s: float = 30.0
    profiles_dir: Path | None = None
    """The site's own compliance profiles (COLDTRAIL_COMPLIANCE_PROFILES_DIR)."""


def create_app(config: ApiConfig, clock: Clock | None = None) -> FastAPI:
    clock = clock or SystemClock()
    pool = ConnectionPool(
        config.database_url,
        min_size=1,
        # Requests take at most POOL_SIZE (see slots); the one more is the live view's
        # background build, so it never makes a request wait for a connection.
        max_size=POOL_SIZE + 1,
        open=False,
        # Autocommit: each ERP call is its own transaction (erp.tx.acting), and a refused
        # signature's audit entry commits even though the request fails.
        # UTC: times the database writes into JSON itself (the live view) read the same
        # wherever the server runs.
        kwargs={
            "application_name": "coldtrail-api",
            "autocommit": True,
            "options": "-c TimeZone=UTC",
        },
    )

    live_builder = LiveBuilder(config.stale_after_s)

    def rebuild_live(site: str | None, now: datetime) -> bytes:
        with pool.connection() as conn:  # the pool's one connection beyond the requests'
            return live_builder.build(conn, site, now)

    snapshots = LiveSnapshots(clock, config.live_max_age_s, rebuild_live)
    hubs: list[StreamHub] = []  # the running one, while the app is up

    def hub() -> StreamHub | None:
        return hubs[0] if hubs else None

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        pool.open(wait=True, timeout=30)
        if config.admin_password:
            with pool.connection() as conn:
                if people.ensure_admin(conn, config.admin_password):
                    log.info("created bootstrap account 'admin'")
        if config.mqtt is not None:
            started = StreamHub(config.mqtt, config.topic_root, clock)
            started.start()
            hubs.append(started)
        try:
            yield
        finally:
            for running in hubs:
                running.stop()
            hubs.clear()
            snapshots.close()
            pool.close()

    app = FastAPI(
        title="ColdTrail",
        version=__version__,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        # Swagger UI is served from the package, not a CDN: /docs works at a site offline.
        docs_url=None,
        redoc_url=None,
    )
    app.add_middleware(BodyLimit)
    web.offline_docs(app)
    plain_openapi = app.openapi

    def openapi_with_examples() -> dict[str, Any]:
        if app.openapi_schema is None:
            limits.document(examples.merge(plain_openapi(), examples.load()))
        return plain_openapi()

    app.openapi = openapi_with_examples  # type: ignore[method-assign]
    oauth2 = OAuth2PasswordBearer(tokenUrl=f"{PREFIX}/auth/token", auto_error=False)
    guesses = Throttle(clock, per_minute=config.guesses_per_minute, burst=config.guess_burst)

    def guard(request: Request) -> None:
        """A client guessing passwords (logins, e-signatures) too fast gets a 429."""
        wait_s = guesses.take(web.client(request))
        if wait_s > 0:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                f"too many password attempts from this address: try again in {wait_s:.0f} s",
                headers={"Retry-After": str(max(1, round(wait_s)))},
            )

    app.state.password_guard = guard

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(PoolTimeout)
    async def _db_down(_: Request, exc: Exception) -> JSONResponse:
        log.error("database unavailable: %s", exc)
        return JSONResponse(
            {"detail": "database unavailable, try again shortly"},
            status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        )

    @app.exception_handler(RecordError)
    async def _refused(_: Request, exc: Exception) -> JSONResponse:
        codes: dict[type[Exception], int] = {
            NotFound: status.HTTP_404_NOT_FOUND,
            SignatureRefused: status.HTTP_403_FORBIDDEN,
            PreconditionFailed: status.HTTP_412_PRECONDITION_FAILED,
        }
        code = codes.get(type(exc), status.HTTP_409_CONFLICT)
        return JSONResponse({"detail": str(exc)}, status_code=code)

    # FastAPI's own handler quotes the input back, and a NaN or a lone surrogate in it made
    # that answer unwritable: a 500 instead of the 422.
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse({"detail": web.json_safe(list(exc.errors()))}, status_code=422)

    # Content that can't be read (a bad GS1 scan), or a value the database can't hold (a NUL
    # character, a number out of range): 422 in the shape FastAPI documents for every route.
    @app.exception_handler(PayloadError)
    @app.exception_handler(psycopg.DataError)
    async def _unreadable(_: Request, exc: Exception) -> JSONResponse:
        msg = str(exc) if isinstance(exc, PayloadError) else f"a value can't be stored: {exc}"
        return JSONResponse(
            {"detail": [{"loc": ["body"], "msg": msg, "type": "value_error"}]},
            status_code=422,
        )

    # A request waits here, on the event loop, for one of the pool's connections. Taking one
    # inside a worker thread instead would hold the thread while it waits: with more waiting
    # requests than threads (anyio's 40), the requests holding connections could never get
    # a thread to finish on, and the API would stall (as 80 push-stream clients found).
    slots = asyncio.Semaphore(POOL_SIZE)

    async def db() -> AsyncIterator[Conn]:
        async with slots:
            conn = await run_in_threadpool(pool.getconn)
            try:
                yield conn
            finally:
                await run_in_threadpool(pool.putconn, conn)

    # Function scope: the connection goes back to the pool when the handler returns, before
    # the response is sent, so a long response (the push stream) holds none.
    Db = Annotated[Conn, Depends(db, scope="function")]

    async def presented_token(
        request: Request, header: Annotated[str | None, Depends(oauth2)]
    ) -> str | None:
        """The bearer token, or on a read the web console's session (the same token, kept in
        an HttpOnly, SameSite=Strict cookie): a write through the API always needs the
        header, so a form posted from elsewhere can't write with a browser's cookie."""
        if header:
            return header
        if request.method in ("GET", "HEAD"):
            return request.cookies.get(auth.SESSION_COOKIE)
        return None

    def current_user(conn: Db, token: Annotated[str | None, Depends(presented_token)]) -> User:
        user = auth.user_of(conn, token, config.secret_key, clock.now())
        if user is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "not authenticated",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return user

    async def still_valid(user: User) -> bool:
        """Whether the tokens ``user`` holds still count (for push streams, which outlive
        the request that checked them)."""
        async with asynccontextmanager(db)() as conn:
            now = await run_in_threadpool(people.load_user, conn, user.username)
        return now is not None and now.token_generation == user.token_generation

    def allow(roles: frozenset[Role]) -> Callable[[User], User]:
        def check(user: Annotated[User, Depends(current_user)]) -> User:
            if user.role not in roles:
                raise HTTPException(
                    status.HTTP_403_FORBIDDEN, f"role {user.role.value} may not do this"
                )
            return user

        check.roles = roles  # type: ignore[attr-defined]  # read by the role-matrix test
        return check

    @app.get(f"{PREFIX}/health", tags=["platform"])
    def health(conn: Db) -> models.Health:
        row = conn.execute(q.SCHEMA_VERSION).fetchone()
        stream = hub()
        return models.Health(
            status="ok",
            version=__version__,
            schema_version=int(row[0]) if row and row[0] else 0,
            stream="off"
            if stream is None
            else "live"
            if stream.subscribed.is_set()
            else "connecting",
            stream_clients=0 if stream is None else stream.clients,
        )

    @app.post(
        f"{PREFIX}/auth/token",
        tags=["auth"],
        responses={
            401: {"description": "wrong user name or password"},
            429: {"description": "too many password attempts from this address"},
        },
    )
    def token(
        request: Request, conn: Db, form: Annotated[OAuth2PasswordRequestForm, Depends()]
    ) -> models.Token:
        return issue(sign_in(request, conn, form.username, form.password))

    def sign_in(request: Request, conn: Conn, username: str, password: str) -> User:
        """The person these credentials name, the attempt (either way) in the audit trail;
        401 when they are wrong, 429 when this address guesses too fast."""
        guard(request)
        if not USERNAME.fullmatch(username):
            # No account can have such a name: refused before the database, so a megabyte
            # of name costs nothing and adds no row (the trail keeps its start).
            with acting(conn, "anonymous"):
                audit.record(
                    conn, "anonymous", "login_failed", "user", username[:64],
                    {"reason": "not a user name"},
                )  # fmt: skip
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                "incorrect username or password",
                headers={"WWW-Authenticate": "Bearer"},
            )
        locked: str | None = None
        try:
            user = people.authenticate(conn, username, password, clock.now(), web.client(request))
        except AccountLocked as exc:
            user, locked = None, str(exc)
        # Part 11 wants every login and every failed one in the trail (with the name tried).
        action = "login" if user is not None else "login_failed"
        with acting(conn, username):
            audit.record(
                conn, username, action, "user", username,
                {"reason": "locked"} if locked else None,
            )  # fmt: skip
        if user is None:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED,
                locked or "incorrect username or password",
                headers={"WWW-Authenticate": "Bearer"},
            )
        return user

    def issue(user: User) -> models.Token:
        return models.Token(
            access_token=auth.issue_token(user, config.secret_key, clock.now(), config.token_ttl_s),
            expires_in=config.token_ttl_s,
        )

    @app.get(f"{PREFIX}/live", tags=["live"], response_model=models.Live)
    def live(
        conn: Db,
        _: Annotated[User, Depends(allow(ALL_ROLES))],
        site: Annotated[str | None, Query(max_length=64, description="one site only")] = None,
    ) -> Response:
        """Everything at once, as it is now: every sensor with its latest reading and state;
        every location with the worst state of its probes and its doors; every vehicle with
        its last known position, its compartments (state, doors) and shipments in transit.
        Changes after this are pushed on `/stream`: open the stream first, then load this, and
        apply what the stream brings that is newer than `generated_at`. A document is built at
        most every `COLDTRAIL_LIVE_MAX_AGE_S` seconds (2) and served again until then, and
        while the next is built in the background (unless it is over ten times that old);
        the `Age` header says how old it is."""

        body, built_at = snapshots.get(site, lambda now: live_builder.build(conn, site, now))
        age = max(0, int((clock.now() - built_at).total_seconds()))
        return Response(body, media_type="application/json", headers={"Age": str(age)})

    @app.get(
        f"{PREFIX}/excursions",
        tags=["excursions"],
        deprecated=True,
        description="One probe's excursions. Kept for v1 clients; use `/location-excursions`: "
        "a place's excursion with the lots and shipments it touched, its holds and alarms, and "
        "its probes' excursions (`probes`).",
    )
    def excursions(
        conn: Db,
        _: Annotated[User, Depends(allow(ALL_ROLES))],
        state: Annotated[str, Query(pattern="^(open|closed|withdrawn|all)$")] = "all",
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> list[models.Excursion]:
        rows = conn.execute(q.EXCURSIONS, {"state": state, "limit": limit}).fetchall()
        return [models.Excursion.from_row(r) for r in rows]

    @app.post(
        f"{PREFIX}/excursions/{{excursion_id}}/acknowledge",
        tags=["excursions"],
        deprecated=True,
        description="Kept for v1 clients; acknowledge the alarm instead "
        "(`POST /alarms/{id}/acknowledge`): that stops its escalation.",
        responses={
            404: {"description": "no such excursion"},
            409: {"description": "already acknowledged"},
        },
    )
    def acknowledge(
        excursion_id: int,
        body: models.Acknowledge,
        conn: Db,
        user: Annotated[User, Depends(allow(WRITERS))],
    ) -> dict[str, int]:
        with acting(conn, user.username):
            done = conn.execute(
                q.ACKNOWLEDGE,
                {
                    "id": excursion_id,
                    "user": user.username,
                    "now": clock.now(),
                    "comment": body.comment,
                },
            ).fetchone()
            if done is None:
                exists = conn.execute(q.EXCURSION_EXISTS, {"id": excursion_id}).fetchone()
                if exists is None:
                    raise HTTPException(status.HTTP_404_NOT_FOUND, f"no excursion {excursion_id}")
                raise HTTPException(
                    status.HTTP_409_CONFLICT, f"excursion {excursion_id} is already acknowledged"
                )
        return {"id": excursion_id}

    account_routes.register(app, erp_routes.Deps(db, allow, clock), issue=issue, guard=guard)
    erp_routes.register(app, erp_routes.Deps(db, allow, clock))
    rules_routes.register(app, erp_routes.Deps(db, allow, clock))
    app.state.record_gate = Gate(config.records_at_once, config.record_wait_s)
    app.state.profiles_dir = config.profiles_dir
    record_routes.register(app, erp_routes.Deps(db, allow, clock), app.state.record_gate)
    masterdata_routes.register(app, erp_routes.Deps(db, allow, clock))
    change_routes.register(app, erp_routes.Deps(db, allow, clock))
    validation_routes.register(app, erp_routes.Deps(db, allow, clock))
    gateway_routes.register(
        app, erp_routes.Deps(db, allow, clock), config.mqtt_admin, config.topic_root
    )
    stream_routes.register(
        app,
        hub=hub,
        allow=allow,
        token_expiry=lambda token: auth.token_expiry(token, config.secret_key),
        still_valid=still_valid,
        bearer=presented_token,
        clock=clock,
        keepalive_s=config.stream_keepalive_s,
    )

    def live_document(conn: Conn, site: str | None) -> bytes:
        body, _ = snapshots.get(site, lambda now: live_builder.build(conn, site, now))
        return body

    # The web console at /, on the same logins, tokens, roles and queries.
    console.register(
        app,
        console.ConsoleDeps(
            db=db, clock=clock, secret_key=config.secret_key, token_ttl_s=config.token_ttl_s,
            sign_in=sign_in, live=live_document, password_guard=guard,
            change_gateway=functools.partial(gateway_routes.change_gateway,
                                             admin=config.mqtt_admin,
                                             topic_root=config.topic_root),
        ),
    )  # fmt: skip
    return app
