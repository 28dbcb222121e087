"""The write skills, with the API semantics of ``kubectl``, and the patches they send:

- ``k8s.restart`` = ``kubectl rollout restart``: a strategic-merge patch of the pod
  template's ``kubectl.kubernetes.io/restartedAt`` annotation (``fieldManager=kubectl-rollout``),
  :func:`restart_patch`;
- ``k8s.scale`` = ``kubectl scale``: a merge patch of the ``scale`` subresource,
  :func:`scale_patch`;
- ``k8s.rollback`` = ``kubectl rollout undo``: a JSON patch replacing ``/spec/template`` with
  the target revision's ReplicaSet template (``pod-template-hash`` label removed) and
  ``/metadata/annotations`` as kubectl computes them, :func:`undo_patch`.

Each write previews with a server-side dry run (``dryRun=All``) before approval and, once
executed, follows the rollout until it completes, fails or ``OPSBOT_ROLLOUT_TIMEOUT`` passes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import Field

from opsbot.meaning import Count
from opsbot.model import SkillResult
from opsbot.skills.base import Risk, Skill, SkillContext, SkillError
from opsbot.skills.kubernetes.objects import (
    CHANGE_CAUSE,
    JSON_PATCH,
    MERGE_PATCH,
    RESTARTED_AT,
    REVISION,
    STRATEGIC_MERGE,
    annotations_of,
    images,
    rollout_status,
    template_without_hash,
)
from opsbot.skills.kubernetes.read import WorkloadArgs, resolve_deployment, revisions

if TYPE_CHECKING:
    from opsbot.skills.kubernetes import Kubernetes

#: annotations ``kubectl rollout undo`` keeps from the Deployment instead of taking the
#: ReplicaSet's
ANNOTATIONS_TO_SKIP = {
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    "deployment.kubernetes.io/revision-history",
    "deployment.kubernetes.io/desired-replicas",
    "deployment.kubernetes.io/max-replicas",
    "deprecated.deployment.rollback.to",
}
RESTART_FIELD_MANAGER = "kubectl-rollout"


class ScaleArgs(WorkloadArgs):
    replicas: Annotated[int, Count("replicas")] = Field(
        ge=0, description="desired number of replicas"
    )


class RollbackArgs(WorkloadArgs):
    revision: Annotated[int | None, Count("revision")] = Field(
        None, ge=1, description="revision to roll back to; default: the previous one"
    )


# -- the patches kubectl sends ---------------------------------------------------------------


def restart_patch(now: datetime | None = None) -> dict[str, Any]:
    """``kubectl rollout restart``: stamp the pod template (strategic merge patch)."""
    stamp = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: stamp}}}}}


def scale_patch(replicas: int) -> dict[str, Any]:
    """``kubectl scale``: the ``scale`` subresource's replicas (merge patch)."""
    return {"spec": {"replicas": replicas}}


def rollback_target(
    name: str, current: int, known: dict[int, Any], wanted: int | None = None
) -> int:
    """The revision ``kubectl rollout undo`` goes to: ``wanted`` if it is one of ``known``,
    else (None) the newest one before ``current``; raises :class:`SkillError` otherwise."""
    if wanted is not None:
        if wanted not in known:
            listed = ", ".join(str(r) for r in sorted(known)) or "none"
            raise SkillError(f"deployment {name} has no revision {wanted} (revisions: {listed})")
        return wanted
    older = [r for r in known if r < current]
    if not older:
        raise SkillError(f"deployment {name} has no previous revision to roll back to")
    return max(older)


def undo_patch(dep: dict[str, Any], rs: dict[str, Any]) -> list[dict[str, Any]]:
    """``kubectl rollout undo`` to ReplicaSet ``rs``: a JSON patch putting back its template
    (without ``pod-template-hash``) and its annotations (keeping the deployment's own
    revision bookkeeping, :data:`ANNOTATIONS_TO_SKIP`)."""
    current = annotations_of(dep)
    new_annotations = {k: v for k, v in current.items() if k in ANNOTATIONS_TO_SKIP}
    for key, value in annotations_of(rs).items():
        if key not in ANNOTATIONS_TO_SKIP:
            new_annotations[key] = value
    return [
        {"op": "replace", "path": "/spec/template", "value": template_without_hash(rs)},
        {"op": "replace", "path": "/metadata/annotations", "value": new_annotations},
    ]


def dry_run_note(result: dict[str, Any]) -> str:
    return f"server-side dry run (dryRun=All): accepted; resulting images {images(result.get('spec', {}).get('template', {}))}"


# -- skills ------------------------------------------------------------------------------------

ArgsT = TypeVar("ArgsT", bound=WorkloadArgs)


class _Write(Skill[ArgsT, "Kubernetes"]):
    """Writes follow the rollout after they ran (see :meth:`follow_up`)."""

    async def follow_up(self, args: ArgsT, ctx: SkillContext[Kubernetes]) -> SkillResult:
        """Poll the deployment until its rollout completes, fails or ``rollout_timeout`` passes."""
        api = await ctx.backend.api(ctx.impersonate)
        settings = ctx.settings
        deadline = time.monotonic() + settings.rollout_timeout
        message = ""
        while True:
            dep = await api.deployment(args.namespace, args.name)
            done, failed, message = rollout_status(dep)
            if done:
                return SkillResult(summary=f"rollout complete: {message}")
            if failed:
                return SkillResult(ok=False, summary=f"rollout failed: {message}")
            if time.monotonic() >= deadline:
                return SkillResult(
                    ok=False,
                    summary=f"rollout not complete after {settings.rollout_timeout:g}s: {message}",
                )
            await asyncio.sleep(settings.rollout_poll)


class K8sRestart(_Write[WorkloadArgs]):
    name = "k8s.restart"
    summary = "Rolling restart of a deployment (kubectl rollout restart)"
    Args = WorkloadArgs
    risk = Risk.WRITE
    examples = [
        "restart checkout in shop",
        "please do a rolling restart of the payments deployment in namespace shop",
        "bounce cart in staging",
    ]
    keywords = {
        "restart": 3.0,
        "rolling restart": 1.0,
        "=restarted": -2.0,
        "who": -2.5,
        "=bounced": -2.0,
    }

    async def preview(self, args: WorkloadArgs, ctx: SkillContext[Kubernetes]) -> str:
        api = await ctx.backend.api(ctx.impersonate)
        dep = await resolve_deployment(api, args.namespace, args.name)
        last = (
            (dep["spec"].get("template", {}).get("metadata", {}) or {}).get("annotations", {}) or {}
        ).get(RESTARTED_AT)
        result = await api.patch_deployment(
            args.namespace,
            args.name,
            restart_patch(),
            content_type=STRATEGIC_MERGE,
            field_manager=RESTART_FIELD_MANAGER,
            dry_run=True,
        )
        return "\n".join(
            [
                f"rolling restart of deployment {args.namespace}/{args.name}: {dep['spec'].get('replicas', 1)} replicas, "
                f"images {images(dep['spec'].get('template', {}))}",
                f"last restart: {last or 'never (by annotation)'}",
                dry_run_note(result),
            ]
        )

    async def run(self, args: WorkloadArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        api = await ctx.backend.api(ctx.impersonate)
        await resolve_deployment(api, args.namespace, args.name)
        patch = restart_patch()
        await api.patch_deployment(
            args.namespace,
            args.name,
            patch,
            content_type=STRATEGIC_MERGE,
            field_manager=RESTART_FIELD_MANAGER,
        )
        return SkillResult(
            summary=f"deployment {args.namespace}/{args.name} restarted",
            data={"change": {"content_type": STRATEGIC_MERGE, "patch": patch}},
        )


class K8sScale(_Write[ScaleArgs]):
    name = "k8s.scale"
    summary = "Set a deployment's replicas (kubectl scale)"
    Args = ScaleArgs
    risk = Risk.WRITE
    examples = [
        "scale checkout to 5 replicas in shop",
        "scale payments in shop down to 2",
        "set replicas of cart to 0 in staging",
    ]
    keywords = {"scale": 3.0, "replica": 2.0, "<number>": 0.3, "=scaled": -2.0, "who": -2.5}

    def _check_max(self, args: ScaleArgs, ctx: SkillContext[Kubernetes]) -> None:
        limit = ctx.backend.config.max_replicas
        if args.replicas > limit:
            raise SkillError(
                f"{args.replicas} replicas is above the configured maximum of {limit} (OPSBOT_K8S_MAX_REPLICAS)"
            )

    async def preview(self, args: ScaleArgs, ctx: SkillContext[Kubernetes]) -> str:
        self._check_max(args, ctx)
        api = await ctx.backend.api(ctx.impersonate)
        dep = await resolve_deployment(api, args.namespace, args.name)
        await api.patch_scale(
            args.namespace,
            args.name,
            scale_patch(args.replicas),
            content_type=MERGE_PATCH,
            dry_run=True,
        )
        current = dep["spec"].get("replicas", 1)
        ready = (dep.get("status", {}) or {}).get("readyReplicas", 0)
        return (
            f"scale deployment {args.namespace}/{args.name}: {current} -> {args.replicas} replicas "
            f"({ready} ready now)\nserver-side dry run (dryRun=All): accepted"
        )

    async def run(self, args: ScaleArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        self._check_max(args, ctx)
        api = await ctx.backend.api(ctx.impersonate)
        dep = await resolve_deployment(api, args.namespace, args.name)
        await api.patch_scale(
            args.namespace, args.name, scale_patch(args.replicas), content_type=MERGE_PATCH
        )
        return SkillResult(
            summary=f"deployment {args.namespace}/{args.name} scaled from "
            f"{dep['spec'].get('replicas', 1)} to {args.replicas} replicas",
            data={"change": {"content_type": MERGE_PATCH, "patch": scale_patch(args.replicas)}},
        )


class K8sRollback(_Write[RollbackArgs]):
    name = "k8s.rollback"
    summary = "Roll a deployment back to the previous or a given revision (kubectl rollout undo)"
    Args = RollbackArgs
    risk = Risk.DANGEROUS
    examples = [
        "roll back checkout in shop",
        "rollback payments in shop to revision 41",
        "undo the last rollout of cart in staging",
    ]
    keywords = {
        "rollback": 3.0,
        "undo": 2.5,
        "previous version": 1.5,
        "=rolled": -1.0,
        "who": -2.5,
    }

    async def compute_undo(
        self, args: RollbackArgs, ctx: SkillContext[Kubernetes]
    ) -> tuple[list[dict[str, Any]], str]:
        """The JSON patch ``kubectl rollout undo`` would send now, and a description of it."""
        api = await ctx.backend.api(ctx.impersonate)
        dep = await resolve_deployment(api, args.namespace, args.name)
        revs = await revisions(api, dep)
        current = int(annotations_of(dep).get(REVISION, "0") or 0)
        target = rollback_target(args.name, current, revs, args.revision)
        rs = revs[target]
        patch = undo_patch(dep, rs)
        template = patch[0]["value"]
        current_template = dep["spec"].get("template", {})
        if template == current_template:
            raise SkillError(
                f"skipped rollback: the current template of {args.name} already matches revision {target}"
            )
        cause = annotations_of(rs).get(CHANGE_CAUSE, "")
        text = (
            f"roll back deployment {args.namespace}/{args.name} from revision {current} to {target}"
            f"{f' ({cause})' if cause else ''}\nimages: {images(current_template)} -> {images(template)}"
        )
        return patch, text

    async def preview(self, args: RollbackArgs, ctx: SkillContext[Kubernetes]) -> str:
        patch, text = await self.compute_undo(args, ctx)
        api = await ctx.backend.api(ctx.impersonate)
        result = await api.patch_deployment(
            args.namespace, args.name, patch, content_type=JSON_PATCH, dry_run=True
        )
        return f"{text}\n{dry_run_note(result)}"

    async def run(self, args: RollbackArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        patch, text = await self.compute_undo(args, ctx)
        api = await ctx.backend.api(ctx.impersonate)
        await api.patch_deployment(args.namespace, args.name, patch, content_type=JSON_PATCH)
        return SkillResult(
            summary=text.splitlines()[0].replace("roll back", "rolled back", 1),
            data={"change": {"content_type": JSON_PATCH, "patch": patch}},
        )
