"""SQLite's write-ahead log checkpointed off the commit path.

SQLite checkpoints a WAL database automatically: the commit that takes the log past
``wal_autocheckpoint`` pages (1,000 by default) copies the log back into the database file and
syncs it before it returns, so every 70th request or so waited 5-8 ms more than the others
(what the bench's engine-overhead p99 showed). SQLite's documentation (https://sqlite.org/wal.html,
"Application-Initiated Checkpoints") suggests checkpointing from a thread of its own; a
``PASSIVE`` checkpoint never blocks readers or writers
(https://sqlite.org/c3ref/wal_checkpoint_v2.html), and writers go on appending to the log
meanwhile. :func:`pragmas` are what every connection to the file sets; :class:`WalCheckpointer`
is that thread.

The automatic checkpoint stays as a backstop, at :data:`BACKSTOP_PAGES`: the log restarts from
its beginning only when a write begins after a checkpoint that caught up with all of it, which
commits arriving back to back never leave time for, so without one the log grows for as long as
they do (212 MB in 10 s); with it, the commit that passes the backstop finishes what the thread
left (little, when it keeps up) and the log restarts. A ``file:`` URI database, which gets no
thread, is checkpointed by the backstop alone.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading

import structlog

log = structlog.get_logger(__name__)

#: the log's size (in pages, 4 KiB each by default) at which a commit checkpoints it itself
BACKSTOP_PAGES = 10_000
#: the size a restarted log is cut back to (bytes)
LOG_SIZE_LIMIT = 16 * 1024 * 1024


def pragmas() -> tuple[str, ...]:
    """What every opsbot connection to a SQLite file sets: the write-ahead log, a commit
    durable when it returns (``FULL``: the log is synced on every commit), checkpoints in a
    commit only past the backstop, and the log cut back when it restarts."""
    return (
        "PRAGMA journal_mode=WAL",
        "PRAGMA synchronous=FULL",
        f"PRAGMA wal_autocheckpoint={BACKSTOP_PAGES}",
        f"PRAGMA journal_size_limit={LOG_SIZE_LIMIT}",
    )


class WalCheckpointer:
    """Checkpoints the SQLite database at ``path`` in a daemon thread, every ``interval``
    seconds while its log has grown since the last one (an idle database costs a ``stat``).

    :meth:`stop` runs a last one that waits for nobody (a reader or writer of another process
    keeps what it needs). A checkpoint that fails (the file went away, the database busy) is
    logged and retried on the next tick.
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
        """End the thread and checkpoint what is left, without waiting on another connection
        (the last connection to close removes the log)."""
        if self._thread.is_alive():
            self._stop.set()
            self._thread.join()
        self._checkpoint("PASSIVE", timeout=0)

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
                self._seen = state  # taken first: a commit during the checkpoint is seen next
                self._checkpoint("PASSIVE")

    def _checkpoint(self, mode: str, timeout: float = 5) -> None:
        try:
            conn = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
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
