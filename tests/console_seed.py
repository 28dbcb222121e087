"""A realistic two days of audit history for the console's tests and screenshots: written as
the engine writes it (the same events, args and details), hash-chained, with the approvals
and votes behind it, at chosen times (yesterday's rollback of payments with two approvers,
today's restart of checkout, reads, a refusal, a pending and an expired approval)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import select

from opsbot.audit import GENESIS, AuditEvent, AuditRecord
from opsbot.store import ApprovalRow, AuditRow, Store, VoteRow

ALICE, BOB, CAROL, DAVE = "slack:U01ALICE", "slack:U02BOB", "slack:U03CAROL", "discord:2222"
OPS = "C0OPS"
ROLLBACK_THREAD = f"slack:{OPS}:1732450000.123456"
ROLLBACK_REQUEST = "rb0payments1"
ROLLBACK_APPROVAL = "7kq2mx"
RESTART_REQUEST = "rs0checkout1"
ROLLBACK_PATCH = [
    {
        "op": "replace",
        "path": "/spec/template",
        "value": {
            "metadata": {"labels": {"app": "payments"}},
            "spec": {"containers": [{"name": "payments", "image": "shop/payments:1.8.2"}]},
        },
    },
    {
        "op": "replace",
        "path": "/metadata/annotations",
        "value": {"deployment.kubernetes.io/revision": "7"},
    },
]


@dataclass
class Seeded:
    rollback_at: datetime
    head: int


class _Writer:
    def __init__(self, seq: int, prev: str) -> None:
        self.seq, self.prev = seq, prev
        self.rows: list[AuditRow] = []

    def add(self, at: datetime, event: str, **fields: Any) -> AuditRecord:
        self.seq += 1
        record = AuditRecord(seq=self.seq, at=at, event=event, prev_hash=self.prev, **fields)
        digest = record.computed_hash()
        data = {k: v for k, v in record.as_dict().items() if k not in ("at", "hash")}
        self.rows.append(AuditRow(**data, at=at, hash=digest))
        self.prev = digest
        return record


def _request(
    w: _Writer,
    at: datetime,
    actor: str,
    text: str,
    *,
    request_id: str,
    thread: str,
    channel: str = OPS,
    skill: str = "",
    args: dict[str, Any] | None = None,
    result: str = "",
    outcome: str = "ok",
) -> datetime:
    """A read request, allowed and answered; returns when it ended."""
    common = {"actor": actor, "channel": channel, "thread": thread, "request_id": request_id}
    w.add(at, AuditEvent.REQUEST, detail=text, **common)
    if not skill:
        w.add(at, AuditEvent.PLAN, outcome="answer", detail=result, **common)
        return at
    args = args or {}
    t = at + timedelta(milliseconds=300)
    w.add(
        t,
        AuditEvent.PLAN,
        skill=skill,
        args=args,
        outcome="invoke",
        detail="planner=offline",
        **common,
    )
    w.add(
        t,
        AuditEvent.POLICY,
        skill=skill,
        args=args,
        outcome="allow",
        detail="everyone reads",
        **common,
    )
    w.add(t, AuditEvent.EXECUTION, skill=skill, args=args, outcome="started", **common)
    end = t + timedelta(milliseconds=420)
    w.add(end, AuditEvent.RESULT, skill=skill, args=args, outcome=outcome, detail=result, **common)
    return end


async def seed(store: Store, now: datetime | None = None, *, approvals: bool = True) -> Seeded:
    """Write the history after whatever the log holds (``approvals``: and the approvals
    behind it, once per database); returns yesterday's rollback time."""
    now = now or datetime.now(UTC)
    async with store.sessions() as session:
        last = (
            await session.execute(
                select(AuditRow.seq, AuditRow.hash).order_by(AuditRow.seq.desc()).limit(1)
            )
        ).first()
    w = _Writer(*(last if last else (0, GENESIS)))
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    yesterday = day - timedelta(days=1)

    # yesterday morning: reads
    _request(
        w,
        yesterday + timedelta(hours=9, minutes=12),
        CAROL,
        "how is payments doing?",
        request_id="rd0health001",
        thread=f"slack:{OPS}:1732439520.000100",
        skill="service.health",
        args={"service": "payments", "namespace": "shop"},
        result="payments: 41.2 req/s, 6.8 % errors, p99 1.9 s (1h)",
    )
    _request(
        w,
        yesterday + timedelta(hours=13, minutes=55),
        ALICE,
        "show payments errors in the logs",
        request_id="rd0logs00001",
        thread=f"slack:{OPS}:1732449300.000200",
        skill="logs.errors",
        args={"service": "payments", "namespace": "shop", "since": "1h"},
        result="3 error patterns: 'upstream timeout talking to <*>' x412, ...",
    )

    # yesterday 14:02: alice rolls back payments; bob and carol approve; it runs
    at = yesterday + timedelta(hours=14, minutes=2, seconds=11)
    args = {"name": "payments", "namespace": "shop"}
    common = {
        "channel": OPS,
        "thread": ROLLBACK_THREAD,
        "request_id": ROLLBACK_REQUEST,
        "skill": "k8s.rollback",
    }
    preview = (
        "roll back deployment shop/payments from revision 8 to 7 (release 1.8.2)\n"
        "images: shop/payments:1.9.0 -> shop/payments:1.8.2\n"
        "server-side dry run (dryRun=All): accepted"
    )
    w.add(
        at,
        AuditEvent.REQUEST,
        actor=ALICE,
        channel=OPS,
        thread=ROLLBACK_THREAD,
        request_id=ROLLBACK_REQUEST,
        detail="roll back payments in shop, 1.9.0 is failing checkouts",
    )
    w.add(
        at,
        AuditEvent.PLAN,
        actor=ALICE,
        args=args,
        outcome="invoke",
        detail="planner=offline",
        **common,
    )
    w.add(
        at,
        AuditEvent.POLICY,
        actor=ALICE,
        args=args,
        outcome="approve",
        detail="rollbacks need two approvers",
        **common,
    )
    opened = at + timedelta(seconds=1)
    w.add(
        opened,
        AuditEvent.APPROVAL_REQUESTED,
        actor=ALICE,
        args=args,
        outcome=ROLLBACK_APPROVAL,
        detail="rule=rollbacks need two approvers approvers=group:sre,group:oncall min=2 "
        f"expires={(opened + timedelta(minutes=30)).isoformat()}",
        **common,
    )
    bob_at = opened + timedelta(minutes=3, seconds=4)
    w.add(
        bob_at,
        AuditEvent.APPROVAL_VOTE,
        actor=BOB,
        args=args,
        outcome="recorded",
        detail=f"{ROLLBACK_APPROVAL} approve: approval recorded (1/2)",
        **common,
    )
    carol_at = opened + timedelta(minutes=6, seconds=40)
    w.add(
        carol_at,
        AuditEvent.APPROVAL_APPROVED,
        actor=CAROL,
        args=args,
        outcome="approved",
        detail=f"{ROLLBACK_APPROVAL} approve: approved",
        **common,
    )
    run_at = carol_at + timedelta(milliseconds=200)
    w.add(run_at, AuditEvent.EXECUTION, actor=ALICE, args=args, outcome="started", **common)
    done_at = run_at + timedelta(milliseconds=840)
    w.add(
        done_at,
        AuditEvent.RESULT,
        actor=ALICE,
        args={
            **args,
            "change": {"content_type": "application/json-patch+json", "patch": ROLLBACK_PATCH},
        },
        outcome="ok",
        detail="rolled back deployment shop/payments from revision 8 to 7 (release 1.8.2) (840 ms)",
        **common,
    )
    w.add(
        done_at + timedelta(seconds=38),
        AuditEvent.FOLLOW_UP,
        actor=ALICE,
        args=args,
        outcome="ok",
        detail="rollout complete: 3/3 replicas updated and available",
        **common,
    )
    approval_rows = [
        ApprovalRow(
            id=ROLLBACK_APPROVAL,
            request_id=ROLLBACK_REQUEST,
            requester=ALICE,
            channel=OPS,
            thread=ROLLBACK_THREAD,
            skill="k8s.rollback",
            args=args,
            rule="rollbacks need two approvers",
            approvers=["group:sre", "group:oncall"],
            min_approvals=2,
            preview=preview,
            state="executed",
            created_at=opened,
            expires_at=opened + timedelta(minutes=30),
            decided_at=carol_at,
            finished_at=done_at,
            result="rolled back deployment shop/payments from revision 8 to 7 (release 1.8.2)",
        )
    ]
    votes = [
        VoteRow(approval_id=ROLLBACK_APPROVAL, approver=BOB, verdict="approve", at=bob_at),
        VoteRow(approval_id=ROLLBACK_APPROVAL, approver=CAROL, verdict="approve", at=carol_at),
    ]

    # yesterday 16:40: dave (not sre) asks to scale: refused by policy
    t = yesterday + timedelta(hours=16, minutes=40)
    thread = "discord:1190000000000000001"
    w.add(
        t,
        AuditEvent.REQUEST,
        actor=DAVE,
        channel="1190000000000000000",
        thread=thread,
        request_id="dn0scale0001",
        detail="scale checkout to 12 in shop",
    )
    w.add(
        t,
        AuditEvent.POLICY,
        actor=DAVE,
        channel="1190000000000000000",
        thread=thread,
        request_id="dn0scale0001",
        skill="k8s.scale",
        args={"name": "checkout", "namespace": "shop", "replicas": 12},
        outcome="deny",
        detail="no rule allows discord:2222 to run k8s.scale in shop",
    )

    # yesterday 18:00: a silence request that expired without votes
    t = yesterday + timedelta(hours=18)
    sargs = {"matchers": "alertname=DiskFilling", "duration": "2h", "comment": "resizing"}
    scommon = {
        "channel": OPS,
        "thread": f"slack:{OPS}:1732464000.000300",
        "request_id": "ex0silence01",
        "skill": "alerts.silence",
    }
    w.add(
        t,
        AuditEvent.REQUEST,
        actor=ALICE,
        detail="silence DiskFilling for 2h",
        **{k: v for k, v in scommon.items() if k != "skill"},
    )
    w.add(
        t,
        AuditEvent.POLICY,
        actor=ALICE,
        args=sargs,
        outcome="approve",
        detail="sre restarts and scales with one on-call approval",
        **scommon,
    )
    w.add(
        t,
        AuditEvent.APPROVAL_REQUESTED,
        actor=ALICE,
        args=sargs,
        outcome="q4w8ze",
        detail="rule=sre restarts and scales with one on-call approval approvers=group:oncall min=1",
        **scommon,
    )
    w.add(
        t + timedelta(minutes=15),
        AuditEvent.APPROVAL_EXPIRED,
        actor=ALICE,
        args=sargs,
        outcome="expired",
        detail="q4w8ze expired with 0/1 approvals",
        **scommon,
    )
    approval_rows.append(
        ApprovalRow(
            id="q4w8ze",
            request_id="ex0silence01",
            requester=ALICE,
            channel=OPS,
            thread=scommon["thread"],
            skill="alerts.silence",
            args=sargs,
            rule="sre restarts and scales with one on-call approval",
            approvers=["group:oncall"],
            min_approvals=1,
            preview="silence alertname=DiskFilling for 2h (matches 1 firing alert)",
            state="expired",
            created_at=t,
            expires_at=t + timedelta(minutes=15),
            decided_at=t + timedelta(minutes=15),
            finished_at=None,
            result="",
        )
    )

    # today: reads, then alice restarts checkout with bob's approval
    base = max(day, now - timedelta(hours=3))
    _request(
        w,
        base + timedelta(minutes=5),
        BOB,
        "which alerts are firing?",
        request_id="rd0alerts001",
        thread=f"slack:{OPS}:1732520000.000400",
        skill="alerts.list",
        args={"state": "firing"},
        result="2 alerts firing: HighErrorRate (checkout), HighLatency (checkout)",
    )
    t = base + timedelta(minutes=9)
    rargs = {"name": "checkout", "namespace": "shop"}
    rthread = f"slack:{OPS}:1732520540.000500"
    rcommon = {
        "channel": OPS,
        "thread": rthread,
        "request_id": RESTART_REQUEST,
        "skill": "k8s.restart",
    }
    w.add(
        t,
        AuditEvent.REQUEST,
        actor=ALICE,
        channel=OPS,
        thread=rthread,
        request_id=RESTART_REQUEST,
        detail="restart checkout in shop",
    )
    w.add(
        t,
        AuditEvent.PLAN,
        actor=ALICE,
        args=rargs,
        outcome="invoke",
        detail="planner=offline",
        **rcommon,
    )
    w.add(
        t,
        AuditEvent.POLICY,
        actor=ALICE,
        args=rargs,
        outcome="approve",
        detail="sre restarts and scales with one on-call approval",
        **rcommon,
    )
    w.add(
        t,
        AuditEvent.APPROVAL_REQUESTED,
        actor=ALICE,
        args=rargs,
        outcome="h3np9c",
        detail="rule=sre restarts and scales with one on-call approval approvers=group:oncall min=1",
        **rcommon,
    )
    voted = t + timedelta(minutes=1, seconds=52)
    w.add(
        voted,
        AuditEvent.APPROVAL_APPROVED,
        actor=BOB,
        args=rargs,
        outcome="approved",
        detail="h3np9c approve: approved",
        **rcommon,
    )
    w.add(voted, AuditEvent.EXECUTION, actor=ALICE, args=rargs, outcome="started", **rcommon)
    restart_patch = {
        "spec": {
            "template": {
                "metadata": {
                    "annotations": {"kubectl.kubernetes.io/restartedAt": voted.isoformat()}
                }
            }
        }
    }
    w.add(
        voted + timedelta(milliseconds=310),
        AuditEvent.RESULT,
        actor=ALICE,
        args={
            **rargs,
            "change": {
                "content_type": "application/strategic-merge-patch+json",
                "patch": restart_patch,
            },
        },
        outcome="ok",
        detail="deployment shop/checkout restarted (310 ms)",
        **rcommon,
    )
    w.add(
        voted + timedelta(seconds=44),
        AuditEvent.FOLLOW_UP,
        actor=ALICE,
        args=rargs,
        outcome="ok",
        detail="rollout complete: 4/4 replicas updated and available",
        **rcommon,
    )
    approval_rows.append(
        ApprovalRow(
            id="h3np9c",
            request_id=RESTART_REQUEST,
            requester=ALICE,
            channel=OPS,
            thread=rthread,
            skill="k8s.restart",
            args=rargs,
            rule="sre restarts and scales with one on-call approval",
            approvers=["group:oncall"],
            min_approvals=1,
            preview="rolling restart of deployment shop/checkout: 4 replicas, images shop/checkout:3.2.1",
            state="executed",
            created_at=t,
            expires_at=t + timedelta(minutes=15),
            decided_at=voted,
            finished_at=voted + timedelta(milliseconds=310),
            result="deployment shop/checkout restarted",
        )
    )
    votes.append(VoteRow(approval_id="h3np9c", approver=BOB, verdict="approve", at=voted))
    # and a scale waiting for approval right now
    t = now - timedelta(minutes=4)
    pargs = {"name": "cart", "namespace": "staging", "replicas": 6}
    pcommon = {
        "channel": OPS,
        "thread": f"slack:{OPS}:1732530000.000600",
        "request_id": "pd0scale0001",
        "skill": "k8s.scale",
    }
    w.add(
        t,
        AuditEvent.REQUEST,
        actor=ALICE,
        channel=OPS,
        thread=pcommon["thread"],
        request_id="pd0scale0001",
        detail="scale cart in staging to 6",
    )
    w.add(
        t,
        AuditEvent.POLICY,
        actor=ALICE,
        args=pargs,
        outcome="approve",
        detail="sre restarts and scales with one on-call approval",
        **pcommon,
    )
    w.add(
        t,
        AuditEvent.APPROVAL_REQUESTED,
        actor=ALICE,
        args=pargs,
        outcome="m5tv2k",
        detail="rule=sre restarts and scales with one on-call approval approvers=group:oncall min=1",
        **pcommon,
    )
    approval_rows.append(
        ApprovalRow(
            id="m5tv2k",
            request_id="pd0scale0001",
            requester=ALICE,
            channel=OPS,
            thread=pcommon["thread"],
            skill="k8s.scale",
            args=pargs,
            rule="sre restarts and scales with one on-call approval",
            approvers=["group:oncall"],
            min_approvals=1,
            preview="scale deployment staging/cart: 3 -> 6 replicas (3 ready now)",
            state="pending",
            created_at=t,
            expires_at=t + timedelta(minutes=15),
            decided_at=None,
            finished_at=None,
            result="",
        )
    )
    async with store.sessions() as session:
        session.add_all(w.rows)
        await session.commit()
    if not approvals:
        return Seeded(
            rollback_at=yesterday + timedelta(hours=14, minutes=2, seconds=11), head=w.seq
        )
    async with store.sessions() as session:
        session.add_all(approval_rows)
        await session.commit()
        session.add_all(votes)
        await session.commit()
    return Seeded(rollback_at=yesterday + timedelta(hours=14, minutes=2, seconds=11), head=w.seq)
