"""The write skills, with the API semantics of ``kubectl``, and the patches they send, for a
deployment (the default ``kind``), a statefulset or a daemonset:

- ``k8s.restart`` = ``kubectl rollout restart``: a strategic-merge patch of the pod
  template's ``kubectl.kubernetes.io/restartedAt`` annotation (``fieldManager=kubectl-rollout``),
  :func:`restart_patch`; kubectl's ``defaultObjectRestarter`` sends the same stamp to
  deployments, statefulsets and daemonsets (and refuses a paused deployment);
- ``k8s.scale`` = ``kubectl scale``: a merge patch of the ``scale`` subresource
  (``deployments/scale``, ``statefulsets/scale``), :func:`scale_patch`; a daemonset has no
  ``scale`` subresource (one pod per eligible node) and is refused;
- ``k8s.rollback`` = ``kubectl rollout undo``: for a deployment, a JSON patch replacing
  ``/spec/template`` with the target revision's ReplicaSet template (``pod-template-hash``
  label removed) and ``/metadata/annotations`` as kubectl computes them, :func:`undo_patch`;
  for a statefulset or daemonset (kubectl's ``StatefulSetRollbacker`` /
  ``DaemonSetRollbacker``), the target ControllerRevision's ``data`` sent as it is, a
  strategic merge patch of the pod template (:func:`revision_patch`), the target being the
  second highest revision or ``--to-revision``, and nothing sent when the live template
  already is that revision's.

Each write previews with a server-side dry run (``dryRun=All``) before approval and, once
executed, follows the rollout until it completes, fails or ``OPSBOT_ROLLOUT_TIMEOUT`` passes.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal, TypeVar

from pydantic import Field

from opsbot.meaning import Count, ObjectKind
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
    find_history,
    images,
    revision_template,
    template_without_hash,
    workload_status,
)
from opsbot.skills.kubernetes.read import (
    WorkloadArgs,
    WorkloadRouting,
    resolve_workload,
    workload_revisions,
)

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
    kind: Annotated[Literal["deployment", "statefulset", "daemonset"], ObjectKind()] = Field(
        "deployment",
        description="deployment (default) or statefulset; a daemonset cannot be scaled",
    )
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


def revision_patch(rev: dict[str, Any]) -> dict[str, Any]:
    """``kubectl rollout undo`` of a statefulset or daemonset: the target ControllerRevision's
    ``data``, sent unchanged as a strategic merge patch (``{"spec": {"template": {...,
    "$patch": "replace"}}}``: the whole pod template replaced)."""
    data: dict[str, Any] = rev.get("data", {}) or {}
    return data


def dry_run_note(result: dict[str, Any]) -> str:
    return f"server-side dry run (dryRun=All): accepted; resulting images {images(result.get('spec', {}).get('template', {}))}"


# -- skills ------------------------------------------------------------------------------------

ArgsT = TypeVar("ArgsT", bound=WorkloadArgs)


class _Write(WorkloadRouting, Skill[ArgsT, "Kubernetes"]):
    """Writes follow the rollout after they ran (see :meth:`follow_up`)."""

    async def follow_up(self, args: ArgsT, ctx: SkillContext[Kubernetes]) -> SkillResult:
        """Poll the workload until its rollout completes, fails or ``rollout_timeout`` passes
        (as ``kubectl rollout status``)."""
        api = await ctx.backend.api(ctx.impersonate)
        settings = ctx.settings
        deadline = time.monotonic() + settings.rollout_timeout
        message = ""
        while True:
            obj = await api.read(args.kind, args.namespace, args.name)
            done, failed, message = workload_status(args.kind, obj)
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
    summary = "Rolling restart of a deployment, statefulset or daemonset (kubectl rollout restart)"
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
        obj = await resolve_workload(api, args.kind, args.namespace, args.name)
        refuse_paused(args, obj)
        spec = obj.get("spec", {}) or {}
        last = (
            (spec.get("template", {}).get("metadata", {}) or {}).get("annotations", {}) or {}
        ).get(RESTARTED_AT)
        result = await api.patch_workload(
            args.kind,
            args.namespace,
            args.name,
            restart_patch(),
            content_type=STRATEGIC_MERGE,
            field_manager=RESTART_FIELD_MANAGER,
            dry_run=True,
        )
        size = (
            f"{(obj.get('status', {}) or {}).get('desiredNumberScheduled', 0)} pods (one per node)"
            if args.kind == "daemonset"
            else f"{spec.get('replicas', 1)} replicas"
        )
        return "\n".join(
            [
                f"rolling restart of {args.kind} {args.namespace}/{args.name}: {size}, "
                f"images {images(spec.get('template', {}))}",
                f"last restart: {last or 'never (by annotation)'}",
                dry_run_note(result),
            ]
        )

    async def run(self, args: WorkloadArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        api = await ctx.backend.api(ctx.impersonate)
        obj = await resolve_workload(api, args.kind, args.namespace, args.name)
        refuse_paused(args, obj)
        patch = restart_patch()
        await api.patch_workload(
            args.kind,
            args.namespace,
            args.name,
            patch,
            content_type=STRATEGIC_MERGE,
            field_manager=RESTART_FIELD_MANAGER,
        )
        return SkillResult(
            summary=f"{args.kind} {args.namespace}/{args.name} restarted",
            data={"change": {"content_type": STRATEGIC_MERGE, "patch": patch}},
        )


def refuse_paused(args: WorkloadArgs, obj: dict[str, Any]) -> None:
    """kubectl refuses to restart a paused deployment ("can't restart paused deployment (run
    rollout resume first)"): so does opsbot."""
    if args.kind == "deployment" and (obj.get("spec", {}) or {}).get("paused"):
        raise SkillError(
            f"can't restart paused deployment {args.namespace}/{args.name} (run rollout resume first)"
        )


class K8sScale(_Write[ScaleArgs]):
    name = "k8s.scale"
    summary = "Set a deployment's or statefulset's replicas (kubectl scale)"
    Args = ScaleArgs
    risk = Risk.WRITE
    examples = [
        "scale checkout to 5 replicas in shop",
        "scale payments in shop down to 2",
        "set replicas of cart to 0 in staging",
    ]
    keywords = {"scale": 3.0, "replica": 2.0, "<number>": 0.3, "=scaled": -2.0, "who": -2.5}

    def _check(self, args: ScaleArgs, ctx: SkillContext[Kubernetes]) -> None:
        """A daemonset has no ``scale`` subresource (kubectl scale finds nothing to scale);
        more replicas than ``OPSBOT_K8S_MAX_REPLICAS`` are refused whatever the policy says."""
        if args.kind == "daemonset":
            raise SkillError(
                f"daemonset {args.namespace}/{args.name} cannot be scaled: a daemonset runs one "
                "pod on each eligible node and has no replicas (no scale subresource); its "
                "node selector and tolerations decide where it runs"
            )
        limit = ctx.backend.config.max_replicas
        if args.replicas > limit:
            raise SkillError(
                f"{args.replicas} replicas is above the configured maximum of {limit} (OPSBOT_K8S_MAX_REPLICAS)"
            )

    async def preview(self, args: ScaleArgs, ctx: SkillContext[Kubernetes]) -> str:
        self._check(args, ctx)
        api = await ctx.backend.api(ctx.impersonate)
        obj = await resolve_workload(api, args.kind, args.namespace, args.name)
        await api.patch_scale(
            args.namespace,
            args.name,
            scale_patch(args.replicas),
            kind=args.kind,
            content_type=MERGE_PATCH,
            dry_run=True,
        )
        current = obj["spec"].get("replicas", 1)
        ready = (obj.get("status", {}) or {}).get("readyReplicas", 0)
        return (
            f"scale {args.kind} {args.namespace}/{args.name}: {current} -> {args.replicas} replicas "
            f"({ready} ready now)\nserver-side dry run (dryRun=All): accepted"
        )

    async def run(self, args: ScaleArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        self._check(args, ctx)
        api = await ctx.backend.api(ctx.impersonate)
        obj = await resolve_workload(api, args.kind, args.namespace, args.name)
        await api.patch_scale(
            args.namespace,
            args.name,
            scale_patch(args.replicas),
            kind=args.kind,
            content_type=MERGE_PATCH,
        )
        return SkillResult(
            summary=f"{args.kind} {args.namespace}/{args.name} scaled from "
            f"{obj['spec'].get('replicas', 1)} to {args.replicas} replicas",
            data={"change": {"content_type": MERGE_PATCH, "patch": scale_patch(args.replicas)}},
        )


class K8sRollback(_Write[RollbackArgs]):
    name = "k8s.rollback"
    summary = "Roll a deployment, statefulset or daemonset back to the previous or a given revision (kubectl rollout undo)"
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
    ) -> tuple[Any, str, str]:
        """The patch ``kubectl rollout undo`` would send now, its content type, and a
        description of it."""
        api = await ctx.backend.api(ctx.impersonate)
        obj = await resolve_workload(api, args.kind, args.namespace, args.name)
        revs = await workload_revisions(api, args.kind, obj)
        if args.kind != "deployment":
            return self._undo_controller_revision(args, obj, revs)
        current = int(annotations_of(obj).get(REVISION, "0") or 0)
        target = rollback_target(args.name, current, revs, args.revision)
        rs = revs[target]
        patch = undo_patch(obj, rs)
        template = patch[0]["value"]
        current_template = obj["spec"].get("template", {})
        if template == current_template:
            raise SkillError(
                f"skipped rollback: the current template of {args.name} already matches revision {target}"
            )
        cause = annotations_of(rs).get(CHANGE_CAUSE, "")
        text = (
            f"roll back deployment {args.namespace}/{args.name} from revision {current} to {target}"
            f"{f' ({cause})' if cause else ''}\nimages: {images(current_template)} -> {images(template)}"
        )
        return patch, JSON_PATCH, text

    def _undo_controller_revision(
        self, args: RollbackArgs, obj: dict[str, Any], revs: dict[int, dict[str, Any]]
    ) -> tuple[Any, str, str]:
        """kubectl's StatefulSetRollbacker / DaemonSetRollbacker: the second highest
        ControllerRevision (or ``--to-revision``), skipped when the live template already
        is its template, else its ``data`` as a strategic merge patch."""
        try:
            target = find_history(args.name, args.kind, revs, args.revision)
        except ValueError as exc:
            raise SkillError(str(exc)) from None
        rev = revs[target]
        template = revision_template(rev)
        current_template = obj.get("spec", {}).get("template", {})
        if template == current_template:
            raise SkillError(
                f"skipped rollback: the current template of {args.kind} {args.name} already matches revision {target}"
            )
        current = max(revs)
        cause = annotations_of(rev).get(CHANGE_CAUSE, "")
        text = (
            f"roll back {args.kind} {args.namespace}/{args.name} from revision {current} to {target}"
            f"{f' ({cause})' if cause else ''}\nimages: {images(current_template)} -> {images(template)}"
        )
        return revision_patch(rev), STRATEGIC_MERGE, text

    async def preview(self, args: RollbackArgs, ctx: SkillContext[Kubernetes]) -> str:
        patch, content_type, text = await self.compute_undo(args, ctx)
        api = await ctx.backend.api(ctx.impersonate)
        result = await api.patch_workload(
            args.kind, args.namespace, args.name, patch, content_type=content_type, dry_run=True
        )
        return f"{text}\n{dry_run_note(result)}"

    async def run(self, args: RollbackArgs, ctx: SkillContext[Kubernetes]) -> SkillResult:
        patch, content_type, text = await self.compute_undo(args, ctx)
        api = await ctx.backend.api(ctx.impersonate)
        await api.patch_workload(
            args.kind, args.namespace, args.name, patch, content_type=content_type
        )
        return SkillResult(
            summary=text.splitlines()[0].replace("roll back", "rolled back", 1),
            data={"change": {"content_type": content_type, "patch": patch}},
        )
