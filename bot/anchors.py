"""Anchors: the audit chain's head written outside the database at intervals.

Each anchor is one JSON line appended to a file (``OPSBOT_AUDIT_ANCHOR_PATH``: keep it on
storage the database's users cannot rewrite, or ship it off the machine) and one log line
(``audit.anchor``): the head record's ``seq`` and ``hash``, when, and an HMAC-SHA256 of those
under ``OPSBOT_AUDIT_ANCHOR_KEY`` (a line whose signature does not match is reported, not
trusted). Deleting the newest records, or rewriting the whole table with fresh hashes, is then
caught by :meth:`opsbot.audit.AuditLog.verify_chain` against the last anchor. An optional
``post`` callable also sends each anchor to a chat channel (a third copy).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import structlog

from opsbot.audit import AnchorPoint, AuditLog

log = structlog.get_logger(__name__)

#: anchors read back from the end of the file (a year of 5-minute anchors is ~105k lines)
MAX_READ = 200_000


@dataclass(frozen=True)
class Anchor:
    seq: int
    hash: str
    at: datetime
    sig: str = ""

    def payload(self) -> bytes:
        return f"{self.seq}:{self.hash}:{self.at.isoformat()}".encode()

    def line(self) -> str:
        return json.dumps(
            {"seq": self.seq, "hash": self.hash, "at": self.at.isoformat(), "sig": self.sig},
            sort_keys=True,
        )

    def point(self, where: str = "") -> AnchorPoint:
        return AnchorPoint(seq=self.seq, hash=self.hash, at=self.at, where=where)


def sign(anchor: Anchor, key: str) -> Anchor:
    sig = hmac.new(key.encode(), anchor.payload(), hashlib.sha256).hexdigest() if key else ""
    return Anchor(anchor.seq, anchor.hash, anchor.at, sig)


@dataclass
class AnchorRead:
    anchors: list[Anchor]
    #: lines that do not parse or whose signature does not match (line number: reason)
    problems: list[str]


class AnchorFile:
    """The anchors of one file; ``key`` signs and checks them (empty: unsigned)."""

    def __init__(self, path: Path, key: str = "") -> None:
        self.path = path
        self.key = key

    def append(self, anchor: Anchor) -> Anchor:
        signed = sign(anchor, self.key)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as out:
            out.write(signed.line() + "\n")
            out.flush()
            os.fsync(out.fileno())
        return signed

    def read(self) -> AnchorRead:
        if not self.path.is_file():
            return AnchorRead([], [])
        anchors: list[Anchor] = []
        problems: list[str] = []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        start = max(len(lines) - MAX_READ, 0)
        for number, line in enumerate(lines[start:], start + 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
                anchor = Anchor(
                    int(data["seq"]),
                    str(data["hash"]),
                    datetime.fromisoformat(data["at"]),
                    str(data.get("sig", "")),
                )
            except (ValueError, KeyError, TypeError):
                problems.append(f"{self.path}:{number}: not an anchor line")
                continue
            if self.key and not hmac.compare_digest(sign(anchor, self.key).sig, anchor.sig):
                problems.append(
                    f"{self.path}:{number}: signature does not match (edited, or another key)"
                )
                continue
            anchors.append(anchor)
        return AnchorRead(anchors, problems)

    def points(self) -> list[AnchorPoint]:
        return [a.point(str(self.path)) for a in self.read().anchors]

    def latest(self) -> Anchor | None:
        anchors = self.read().anchors
        return max(anchors, key=lambda a: a.seq) if anchors else None


Post = Callable[[str], Awaitable[None]]


class Anchorer:
    """Writes the head as an anchor when it moved since the last one (``anchor_once``), or
    every ``interval`` seconds (``run``)."""

    def __init__(
        self, audit: AuditLog, file: AnchorFile, *, interval: float, post: Post | None = None
    ) -> None:
        self.audit = audit
        self.file = file
        self.interval = interval
        self.post = post

    async def anchor_once(self) -> Anchor | None:
        seq, digest = await self.audit.head()
        if seq == 0:
            return None
        latest = await asyncio.to_thread(self.file.latest)
        if latest is not None and latest.seq == seq and latest.hash == digest:
            return None
        anchor = await asyncio.to_thread(
            self.file.append, Anchor(seq=seq, hash=digest, at=datetime.now(UTC))
        )
        log.info(
            "audit.anchor",
            seq=anchor.seq,
            hash=anchor.hash,
            at=anchor.at.isoformat(),
            sig=anchor.sig,
            file=str(self.file.path),
        )
        if self.post is not None:
            try:
                await self.post(
                    f"audit anchor: record {anchor.seq} hash {anchor.hash} at "
                    f"{anchor.at:%Y-%m-%d %H:%M:%S} UTC"
                )
            except Exception:
                log.exception("audit.anchor_post_failed")
        return anchor

    async def run(self) -> None:
        while True:
            try:
                await self.anchor_once()
            except Exception:
                log.exception("audit.anchor_failed")
            await asyncio.sleep(self.interval)
