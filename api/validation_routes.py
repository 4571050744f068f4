"""Validation packs kept in the database: listed, read as JSON or PDF, signed for execution
and QA review (``coldtrail validate pack`` makes them)."""

# No `from __future__ import annotations`: FastAPI reads these annotations at run time.
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request, Response

from coldtrail.api import models, web
from coldtrail.api.erp_routes import OVERSIGHT, PREFIX, QA, Deps
from coldtrail.erp.people import User
from coldtrail.erp.signatures import Credentials, Signature
from coldtrail.erp.tx import Conn
from coldtrail.validation import pack


def register(app: FastAPI, deps: Deps) -> None:
    Db = Annotated[Conn, Depends(deps.db, scope="function")]
    Qa = Annotated[User, Depends(deps.allow(QA))]
    Oversight = Annotated[User, Depends(deps.allow(OVERSIGHT))]
    refusals: dict[int | str, dict[str, Any]] = {
        404: {"description": "no such validation run"},
        409: {"description": "signed for that already, or the review by the executor"},
    }

    @app.get(PREFIX + "/validation", tags=["validation"])
    def list_runs(conn: Db, _: Oversight) -> list[dict[str, Any]]:
        """The packs kept, newest first: verdict, cases, deviations, SHA-256."""
        return pack.runs(conn)

    @app.get(PREFIX + "/validation/{run_id}", tags=["validation"], responses={
        **refusals, 200: {"content": {"application/json": {}, "application/pdf": {}}},
    })  # fmt: skip
    def get_run(
        run_id: int, conn: Db, _: Oversight,
        format: Annotated[Literal["json", "pdf"], Query()] = "json",
    ) -> Response:  # fmt: skip
        """The pack with the signatures made on it, as JSON or as the PDF in both languages."""
        doc, sha, signed = pack.load(conn, run_id)
        if format == "pdf":
            return Response(
                pack.render(doc, sha, signed, run_id), media_type="application/pdf",
                headers={"Content-Disposition": f'attachment; filename="validation-{run_id}.pdf"'},
            )  # fmt: skip
        return Response(pack.as_json(doc, sha, signed, run_id), media_type="application/json")

    signed = {**refusals, 403: {"description": "the signature was refused"}}

    @app.post(PREFIX + "/validation/{run_id}/signatures", tags=["validation"], status_code=201,
              responses=signed)  # fmt: skip
    def sign_run(
        run_id: int, body: models.ValidationSignIn, conn: Db, user: Qa, request: Request
    ) -> Signature:
        """Sign a pack: ``execution`` (QA or an administrator who ran it), ``review`` (QA
        only, someone other than the executor). Password again, as for every signature."""
        request.app.state.password_guard(request)
        return pack.sign(
            conn, user.username, run_id, body.role,
            credentials=Credentials(body.username, body.password, web.client(request)),
            reason=body.reason, at=deps.clock.now(),
        )  # fmt: skip
