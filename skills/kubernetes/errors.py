"""Errors of the Kubernetes API, importable without the ``kubernetes`` library."""

from __future__ import annotations

from opsbot.skills.base import SkillError


class KubeError(SkillError):
    """An answer from the Kubernetes API that is not a success; ``status`` is the HTTP code
    (0: no answer: unreachable or too slow)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.status = status


class KubeNotFound(KubeError):
    """404: the object does not exist (or not in that namespace)."""
