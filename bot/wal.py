"""SQLite's write-ahead log checkpointed off the commit path.

SQLite checkpoints a WAL database automatically: the commit that takes the log past
``wal_autocheckpoint`` pages (1,000 by default) copies the log back into the database file and
syncs it before it returns, so every 70th request or so waited 5-8 ms more than the others
(what the bench's engine-overhead p99 showed). SQLite's documentation (https://sqlite.org/wal.html,
"Application-Initiated Checkpoints") suggests turning the automatic checkpoint off and running
it from a thread of its own; a ``PASSIVE`` checkpoint never blocks readers or writers
(https://sqlite.org/c3ref/wal_checkpoint_v2.html), and writers go on appending to the log
meanwhile. :data:`PRAGMAS` are what every connection to the file sets; :class:`WalCheckpointer`
is that thread.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading

import structlog

log = structlog.get_logger(__name__)

#: what every opsbot connection to a SQLite file sets: the write-ahead log, a commit durable
#: when it returns (``FULL``: the log is synced on every commit), no checkpoint in a commit
PRAGMAS = ("PRAGMA journal_mode=WAL", "PRAGMA synchronous=FULL", "PRAGMA wal_autocheckpoint=0")


class WalCheckpointer:
    """Checkpoints the SQLite database at ``path`` in a daemon thread, every ``interval``
    seconds while its log has grown since the last one (an idle database costs a ``stat``).

    :meth:`stop` runs a last checkpoint that also truncates the log. A checkpoint that fails
    (the file went away, a lock held too long) is logged and retried on the next tick.
    """

    def __init__(self, path: str, interval: float = 1.0) -> None:
        self.path, self.interval = path, interval
        self.checkpoints = 0
        self._stop = threading.Event()
        self._seen: tuple[int, int] | None = None
        self._thread = threading.Thread(target=self._run, name="sqlite-wal-checkpoint", daemon=True)

    def start(self) -> WalCheckpointer:
        self._thread.start()
        return self

    def stop(self) -> None:
        """End the thread and checkpoint what is left (``TRUNCATE``: the log shrinks to
        nothing when no other connection reads it)."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        self._checkpoint("TRUNCATE")

    def _log_state(self) -> tuple[int, int] | None:
        try:
            stat = os.stat(self.path + "-wal")
        except OSError:
            return None
        return stat.st_size, stat.st_mtime_ns

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            state = self._log_state()
            if state is not None and state != self._seen and state[0] > 0:
                self._checkpoint("PASSIVE")
                self._seen = self._log_state()

    def _checkpoint(self, mode: str) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=5, isolation_level=None)
        except sqlite3.Error as exc:
            log.warning("sqlite.checkpoint_failed", path=self.path, error=str(exc))
            return
        try:
            conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
            self.checkpoints += 1
        except sqlite3.Error as exc:
            log.warning("sqlite.checkpoint_failed", path=self.path, error=str(exc))
        finally:
            with contextlib.suppress(sqlite3.Error):
                conn.close()
