"""The validation pack: IQ, OQ, traceability, deviations and changes, as JSON and as a PDF
in Chinese and English, kept in the database and signed there for execution and QA review.

The JSON document is the pack; the PDF is drawn from it (and from the signatures made since)
whenever it is asked for, so the PDF a reviewer signs off and the one an inspector reads
later say the same. The document's SHA-256 is computed once, when the run is stored.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from datetime import datetime
from typing import TYPE_CHECKING, Any
from xml.sax.saxutils import escape

from reportlab.lib.styles import ParagraphStyle
from reportlab.lib.units import mm
from reportlab.platypus import CondPageBreak, KeepTogether, Paragraph

from coldtrail import __version__
from coldtrail.api.record.pdf import Marked, build, styles, table
from coldtrail.erp import changes, signatures
from coldtrail.erp.signatures import Credentials, Meaning, Signature
from coldtrail.erp.tx import Conn, acting
from coldtrail.errors import NotFound, RuleViolation

if TYPE_CHECKING:
    from coldtrail.validation.oq import Result

KIND = "coldtrail-validation-pack"
SYSTEM = (
    "ColdTrail monitors the temperature of stored and transported medicines and medical "
    "devices: edge agents read the loggers (Modbus, BLE) and keep every reading until the "
    "broker (MQTT) has it; ingest stores it in PostgreSQL/TimescaleDB in a hash chain; the "
    "rules engine turns readings into excursions and alarms; the ERP core holds lots, "
    "shipments, holds, CAPA, e-signatures and the audit trail; the API, the web console and "
    "the dashboards serve logistics, QA and auditors. GAMP 5 category 4 (configured product).",
    "ColdTrail 对储存和运输中的药品及医疗器械进行温度监测：边缘代理通过 Modbus、BLE 读取记录仪，"
    "在 MQTT 代理确认前保留每条读数；数据接入服务将其以哈希链存入 PostgreSQL/TimescaleDB；规则引擎"
    "将读数转化为温度偏差和报警；ERP 核心管理批次、运输、暂停、CAPA、电子签名和审计追踪；API、网页"
    "控制台和看板服务于物流、QA 和审计人员。GAMP 5 第 4 类（可配置产品）。",
)
PQ_TEMPLATE = (
    ("Map each storeroom and vehicle empty and loaded, summer and winter; place probes at the "
     "warm and cold spots found.",
     "对各库房和车辆进行空载和满载、夏季和冬季温度分布验证，将探头放在发现的最热点和最冷点。"),
    ("Open a door, switch a cooling unit off, cut a logger's power and a gateway's network; "
     "observe the alarm reaching each named person and the record showing it.",
     "开门、关闭制冷机组、切断记录仪电源和网关网络；观察报警送达每位指定人员，记录中如实显示。"),
    ("Run a shipment end to end: loading, transport, delivery; check its record, PDF and EPCIS "
     "against what happened.",
     "完整运行一次运输：装车、运输、交付；核对其记录、PDF 和 EPCIS 与实际一致。"),
    ("Restore last night's backup into a spare instance and verify it (`coldtrail audit "
     "verify`).", "将前一晚的备份恢复到备用实例并校验（`coldtrail audit verify`）。"),
    ("Review users, roles and alarm contacts against the site's procedures.",
     "按照本单位规程核查用户、角色和报警联系人。"),
)  # fmt: skip

_INSERT = """
INSERT INTO validation_runs (kind, site_id, started_at, finished_at, passed, cases, deviations,
                             sha256, document, run_by)
VALUES ('pack', %(site)s, %(started)s, %(finished)s, %(passed)s, %(cases)s, %(deviations)s,
        %(sha)s, %(doc)s, %(by)s)
RETURNING id
"""
_LAST = """
SELECT finished_at FROM validation_runs
WHERE kind = 'pack' AND passed AND (%(site)s::text IS NULL OR site_id = %(site)s)
ORDER BY finished_at DESC LIMIT 1
"""
_GET = "SELECT id, document, sha256, finished_at FROM validation_runs WHERE id = %s"
_LIST = """
SELECT id, site_id, started_at, finished_at, passed, cases, deviations, sha256, run_by
FROM validation_runs ORDER BY id DESC LIMIT %s
"""


def canonical(document: dict[str, Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str).encode()


def evidence_hash(result: Result) -> str:
    return hashlib.sha256(
        canonical({"checks": result.checks, "evidence": result.evidence})
    ).hexdigest()


def document(
    *,
    iq: dict[str, Any],
    oq: list[Result],
    target: dict[str, Any],
    started: datetime,
    finished: datetime,
    run_by: str,
    changes_since: datetime | None,
    changed: list[changes.Change],
) -> dict[str, Any]:
    """The pack as data: what the PDF shows and what is signed."""
    deviations: list[dict[str, str]] = []
    for check in iq["checks"]:
        if not check["passed"]:
            deviations.append({"test": "IQ", "text": check["text"], "observed": check["observed"]})
    for r in oq:
        for c in r.checks:
            if not c["passed"]:
                deviations.append({"test": r.id, "text": c["text"], "observed": c["observed"]})
        if r.error:
            deviations.append(
                {"test": r.id, "text": "the case could not finish", "observed": r.error}
            )
    for n, d in enumerate(deviations, 1):
        d["id"] = f"DEV-{n:02d}"
    return {
        "kind": KIND,
        "version": 1,
        "coldtrail": __version__,
        "system": {"en": SYSTEM[0], "zh": SYSTEM[1]},
        "target": target,
        "started_at": started.isoformat(),
        "finished_at": finished.isoformat(),
        "run_by": run_by,
        "passed": iq["passed"] and all(r.passed for r in oq),
        "iq": iq,
        "oq": [_result(r) for r in oq],
        "traceability": [
            {
                "requirement": r.requirement,
                "source": r.source,
                "test": r.id,
                "result": "pass" if r.passed else "fail",
                "evidence_sha256": evidence_hash(r),
            }
            for r in oq
        ],
        "deviations": deviations,
        "changes_since_last_validation": {
            "since": changes_since.isoformat() if changes_since else None,
            "changes": [_change(c) for c in changed],
        },
        "pq_template": [{"en": en, "zh": zh} for en, zh in PQ_TEMPLATE],
    }


def _result(r: Result) -> dict[str, Any]:
    out = {k: v for k, v in r.__dict__.items()}
    out["evidence_sha256"] = evidence_hash(r)
    return out


def _change(c: changes.Change) -> dict[str, Any]:
    return {
        "id": c.id, "subject": c.subject, "subject_id": c.subject_id, "site_id": c.site_id,
        "changed": {k: [a, b] for k, (a, b) in c.changed.items()}, "reason": c.reason,
        "changed_by": c.changed_by, "changed_at": c.changed_at.isoformat(),
        "signed_by": [s.signer_name for s in c.signatures],
    }  # fmt: skip


def last_validated(conn: Conn, site: str | None) -> datetime | None:
    """When the last pack that passed was finished: changes after it are listed."""
    row = conn.execute(_LAST, {"site": site}).fetchone()
    return row[0] if row else None


def store(conn: Conn, doc: dict[str, Any], run_by: str) -> tuple[int, str]:
    """Keep the pack (id, SHA-256 of its document)."""
    from psycopg.types.json import Jsonb

    sha = hashlib.sha256(canonical(doc)).hexdigest()
    with acting(conn, run_by):
        row = conn.execute(
            _INSERT,
            {"site": doc["target"].get("site"), "started": doc["started_at"],
             "finished": doc["finished_at"], "passed": doc["passed"],
             "cases": len(doc["oq"]), "deviations": len(doc["deviations"]), "sha": sha,
             "doc": Jsonb(doc), "by": run_by},
        ).fetchone()  # fmt: skip
    assert row is not None  # noqa: S101 - INSERT ... RETURNING returns its row
    return int(row[0]), sha


def load(conn: Conn, run_id: int) -> tuple[dict[str, Any], str, list[Signature]]:
    row = conn.execute(_GET, (run_id,)).fetchone()
    if row is None:
        raise NotFound(f"no validation run {run_id}")
    return row[1], row[2], signatures.of_record(conn, "validation_run", run_id)


def runs(conn: Conn, limit: int = 100) -> list[dict[str, Any]]:
    keys = ("id", "site_id", "started_at", "finished_at", "passed", "cases", "deviations",
            "sha256", "run_by")  # fmt: skip
    return [dict(zip(keys, r, strict=True)) for r in conn.execute(_LIST, (limit,))]


SIGN_MEANINGS: dict[str, Meaning] = {"execution": "responsibility", "review": "approval"}


def sign(
    conn: Conn, session_user: str, run_id: int, role: str, *, credentials: Credentials,
    reason: str, at: datetime,
) -> Signature:  # fmt: skip
    """Sign a stored pack: ``execution`` by whoever ran it (QA or an administrator), ``review``
    by QA only and not by the one who signed its execution. Outside a transaction."""
    from coldtrail.erp.people import Role

    if role not in SIGN_MEANINGS:
        raise RuleViolation(f"a pack is signed for {' or '.join(SIGN_MEANINGS)}, not {role}")
    doc, sha, signed = load(conn, run_id)
    allowed = frozenset({Role.QA}) if role == "review" else signatures.SIGNER_ROLES
    action = f"validation {role}"
    signer = signatures.check_signer(
        conn, session_user, credentials, "validation_run", run_id, action, at, roles=allowed
    )
    if any(s.action == action for s in signed):
        raise RuleViolation(f"validation run {run_id} is signed for {role} already")
    if role == "review" and any(s.signer == signer.username for s in signed):
        raise RuleViolation("the review is signed by someone other than who signed the execution")
    with acting(conn, signer.username):
        return signatures.add(
            conn, signer, meaning=SIGN_MEANINGS[role], reason=reason, signed_at=at,
            record_type="validation_run", record_id=run_id, action=action,
            record={"validation_run": run_id, "sha256": sha, "passed": doc["passed"]},
        )  # fmt: skip


# ---------------------------------------------------------------------------------- PDF


def render(doc: dict[str, Any], sha: str, signed: list[Signature], run_id: int | None) -> bytes:
    """The pack as a PDF, every label in English and Chinese."""
    body, small, h1, h2 = styles()
    h3 = ParagraphStyle("h3", parent=body, fontSize=9, leading=12, spaceBefore=6,
                        spaceAfter=2, keepWithNext=1)  # fmt: skip

    def t(en: str, zh: str) -> str:
        return f"{en} {zh}"

    def p(text: str, style: ParagraphStyle = body) -> Any:
        paragraph = Paragraph(escape(text), style)
        # A section's heading starts a page rather than end one.
        return [CondPageBreak(45 * mm), paragraph] if style is h2 else paragraph

    verdict = t("PASSED", "通过") if doc["passed"] else t("DEVIATIONS", "存在偏差")
    title = t("Validation pack (IQ/OQ)", "验证文件（IQ/OQ）")
    subject = f"run {run_id}" if run_id is not None else "not stored"
    target = doc["target"]
    story: list[Any] = [
        p(f"{title} — {subject}", h1),
        table(
            [
                [t("Result", "结论"), verdict],
                [t("System", "系统"), f"ColdTrail {doc['coldtrail']}"],
                [t("Site", "场所"), str(target.get("site"))],
                [t("Compliance profile", "合规规范"), str(target.get("profile"))],
                [
                    t("Database", "数据库"),
                    t("scratch copy", "临时数据库")
                    if target.get("scratch_database")
                    else t("named by the operator", "操作者指定"),
                ],
                [
                    t("Started, finished", "开始、结束"),
                    f"{doc['started_at']} — {doc['finished_at']}",
                ],
                [t("Run by", "执行人"), doc["run_by"]],
                [
                    t("Cases, deviations", "测试用例、偏差"),
                    f"{len(doc['oq'])}, {len(doc['deviations'])}",
                ],
                [t("Document SHA-256", "文件 SHA-256"), sha],
            ],
            body,
            widths=[45 * mm, 135 * mm],
        ),
        p(t("1 System description", "1 系统描述"), h2),
        p(doc["system"]["en"]),
        p(doc["system"]["zh"]),
        p(t("2 Installation qualification (IQ)", "2 安装确认（IQ）"), h2),
    ]
    installed = doc["iq"]["installed"]
    rows = [[t("Item", "项目"), t("Installed", "已安装")]]
    rows += [
        ["ColdTrail", installed["coldtrail"]], ["Python", installed["python"]],
        ["PostgreSQL", str(installed["postgresql"])],
        ["TimescaleDB", installed["timescaledb"] or t("not installed", "未安装")],
        [t("Broker", "消息代理"), str(installed["broker"])],
        [t("Libraries", "程序库"),
         ", ".join(f"{k} {v}" for k, v in installed["libraries"].items())],
        [t("Migrations", "数据库迁移"), f"{len(installed['migrations'])}, "
         f"{installed['migrations'][-1]['name'] if installed['migrations'] else '—'}"],
        [t("Profiles", "合规规范"),
         ", ".join(f"{k} ({v['sha256'][:12]}…)" for k, v in installed["profiles"].items())],
        [t("Probes", "探头"), str(len(installed["probes"]))],
    ]  # fmt: skip
    story.append(table(rows, small, header=True, widths=[35 * mm, 145 * mm]))
    story.append(p(t("IQ checks", "IQ 检查项"), h3))
    story.append(_checks(doc["iq"]["checks"], small, t))
    story.append(p(t("Migrations and their checksums", "数据库迁移及校验和"), h3))
    story.append(table(
        [[t("Version", "版本"), t("Name", "名称"), "SHA-256"]]
        + [[f"{m['version']:04d}", m["name"], m["sha256"]] for m in installed["migrations"]],
        small, header=True, widths=[16 * mm, 54 * mm, 110 * mm]))  # fmt: skip
    story.append(
        p(t("Configuration (secrets shown only as set)", "配置（密钥仅显示是否已设置）"), h3)
    )
    story.append(table(
        [[k, json.dumps(v, ensure_ascii=False, default=str)]
         for k, v in installed["configuration"].items()],
        small, widths=[55 * mm, 125 * mm]))  # fmt: skip
    if installed["probes"]:
        story.append(p(t("Probes and calibration certificates", "探头及校准证书"), h3))
        story.append(table(
            [[t("Probe", "探头"), t("Place", "位置"), t("Certificate", "证书"),
              t("Valid until", "有效期至"), t("Passed", "合格")]]
            + [[x["sensor"], x["location"], x["certificate"] or "—", x["valid_until"] or "—",
                str(x["passed"])] for x in installed["probes"]],
            small, header=True))  # fmt: skip
    story.append(p(t("3 Operational qualification (OQ)", "3 运行确认（OQ）"), h2))
    for r in doc["oq"]:
        head = f"{r['id']} {r['title']} {r['title_zh']} — " + (
            t("pass", "通过") if r["passed"] else t("FAIL", "不通过")
        )
        block: list[Any] = [
            p(head, h3),
            table(
                [
                    [t("Requirement", "要求"), _both(r, "requirement")],
                    [t("Source", "依据"), r["source"]],
                    [t("Procedure", "步骤"), _both(r, "procedure")],
                    [t("Acceptance", "接受标准"), _both(r, "acceptance")],
                    [t("Evidence SHA-256", "证据 SHA-256"), r["evidence_sha256"]],
                ],
                small,
                widths=[32 * mm, 148 * mm],
            ),
            _checks(r["checks"], small, t),
        ]
        if r["error"]:
            block.append(p(t("Could not finish:", "未能完成：") + " " + r["error"], small))
        story.append(KeepTogether(block[:2]))
        story.extend(block[2:])
    story.append(p(t("4 Traceability matrix", "4 追溯矩阵"), h2))
    story.append(table(
        [[t("Requirement", "要求"), t("Test", "测试"), t("Result", "结果"),
          t("Evidence SHA-256", "证据 SHA-256")]]
        + [[x["requirement"], x["test"], x["result"], x["evidence_sha256"]]
           for x in doc["traceability"]],
        small, header=True, widths=[88 * mm, 14 * mm, 12 * mm, 66 * mm]))  # fmt: skip
    story.append(p(t("5 Deviations", "5 偏差"), h2))
    if doc["deviations"]:
        story.append(table(
            [[t("No.", "编号"), t("Test", "测试"), t("Expected", "预期"), t("Observed", "实际")]]
            + [[d["id"], d["test"], d["text"], d["observed"]] for d in doc["deviations"]],
            small, header=True, widths=[16 * mm, 14 * mm, 70 * mm, 80 * mm]))  # fmt: skip
        story.append(p(t("Each deviation is investigated, its cause and impact assessed and a "
                         "CAPA opened where needed before the system is released for use.",
                         "每项偏差须经调查、评估原因和影响，必要时启动 CAPA，方可放行系统使用。"),
                       small))  # fmt: skip
    else:
        story.append(p(t("None.", "无。")))
    since = doc["changes_since_last_validation"]
    story.append(p(t("6 Changes since the last validation", "6 上次验证以来的变更"), h2))
    story.append(
        p(t("Since", "起始") + ": " + (since["since"] or t("the first validation", "首次验证")))
    )
    if since["changes"]:
        story.append(table(
            [[t("Changed", "时间"), t("Record", "对象"), t("Before → after", "变更前 → 变更后"),
              t("Reason", "理由"), t("Signed by", "签名人")]]
            + [[c["changed_at"], f"{c['subject']} {c['subject_id']}",
                "; ".join(f"{k}: {a} → {b}" for k, (a, b) in c["changed"].items()),
                c["reason"], ", ".join(c["signed_by"])] for c in since["changes"]],
            small, header=True, widths=[30 * mm, 30 * mm, 45 * mm, 45 * mm, 30 * mm]))  # fmt: skip
    else:
        story.append(p(t("No signed change.", "无经签名的变更。")))
    story.append(
        p(
            t(
                "7 Performance qualification (PQ): the site's own",
                "7 性能确认（PQ）：由使用单位执行",
            ),
            h2,
        )
    )
    for n, item in enumerate(doc["pq_template"], 1):
        story.append(p(f"{n}. {item['en']} {item['zh']}", small))
    story.append(p(t("8 Signatures", "8 签名"), h2))
    story.append(_signatures(signed, small, t))

    flat = [x for item in story for x in (item if isinstance(item, list) else [item])]
    return build(
        flat, f"ColdTrail validation pack {subject}", f"{title} — {subject}",
        f"SHA-256 of the pack's document: {sha}",
    )  # fmt: skip


def _both(result: dict[str, Any], key: str) -> Marked:
    """A case's text in English, then in Chinese on a line of its own."""
    zh = (result.get("zh") or {}).get(key)
    return Marked(escape(result[key]) + (f"<br/>{escape(zh)}" if zh else ""))


def _checks(checks: list[dict[str, Any]], style: ParagraphStyle, t: Any) -> Any:
    rows = [[t("Check", "检查项"), t("Observed", "实际"), t("Result", "结果")]]
    rows += [
        [c["text"], c["observed"], Marked(
            t("pass", "通过") if c["passed"]
            else f'<font color="#b00000">{escape(t("FAIL", "不通过"))}</font>'
        )]
        for c in checks
    ]  # fmt: skip
    return table(rows, style, header=True, widths=[80 * mm, 82 * mm, 18 * mm])


def _signatures(signed: list[Signature], style: ParagraphStyle, t: Any) -> Any:
    rows = [[t("Signature", "签名"), t("Name, role", "姓名、角色"), t("Meaning", "含义"),
             t("Signed at", "签名时间"), t("Reason", "理由")]]  # fmt: skip
    for role, en, zh in (
        ("execution", "Executed by", "执行人"),
        ("review", "QA review", "QA 审核"),
    ):
        done = [s for s in signed if s.action == f"validation {role}"]
        if done:
            s = done[0]
            rows.append([t(en, zh), f"{s.signer_name} ({s.signer}, {s.signer_role})", s.meaning,
                         s.signed_at.isoformat(), s.reason])  # fmt: skip
        else:
            rows.append([t(en, zh), t("not signed yet", "尚未签名"), "", "", ""])
    return table(rows, style, header=True, widths=[28 * mm, 45 * mm, 22 * mm, 40 * mm, 45 * mm])


def as_json(doc: dict[str, Any], sha: str, signed: list[Signature], run_id: int | None) -> bytes:
    """The pack's document with its hash and the signatures made on it."""
    return json.dumps(
        {"id": run_id, "sha256": sha, "document": doc,
         "signatures": [asdict(s) for s in signed]},
        ensure_ascii=False, indent=1, default=str,
    ).encode()  # fmt: skip
