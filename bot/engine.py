"""The request flow of DESIGN.md: request -> plan -> policy -> (approval) -> skill -> messages.

The engine is the only caller of skills. Every step writes one audit event and posts one
message into the request's thread through the adapter's ``reply`` callback. Planners only
see the skills the actor may call in this channel; whatever they return is re-validated and
re-decided here, so a planner (or a model behind it) can never widen what runs. Approvals
are decided only through :meth:`Engine.decide`, which adapters call for button clicks and
CLI commands by an authenticated identity.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog
from opsbot import telemetry
from opsbot.approvals import Approval, VoteOutcome, VoteStatus
from opsbot.audit import AuditEvent
from opsbot.intent.base import Planner, ToolRunner
from opsbot.intent.extract import parse
from opsbot.intent.offline import OfflineRouter
from opsbot.model import (
    Actor,
    Button,
    Buttons,
    ButtonStyle,
    Code,
    Image,
    Invocation,
    Message,
    Plan,
    Request,
    SkillResult,
    Step,
    Text,
)
from opsbot.policy import Allow, Deny, NeedsApproval
from opsbot.redact import redact_value
from opsbot.services import Services
from opsbot.skills.base import NotConfigured, Risk, Skill, SkillContext, SkillError
from opsbot.usage import Usage
from pydantic import ValidationError

log = structlog.get_logger(__name__)

Reply = Callable[[Message], Awaitable[None]]
SKILL_TIMEOUT_FACTOR = 3  # a skill may take this many backend timeouts before it is abandoned


def stamped(reply: Reply, actor: Actor) -> Reply:
    """``reply`` that marks each message with the person it is for (context lines)."""

    async def post(message: Message) -> None:
        await reply(message if message.actor else message.model_copy(update={"actor": actor.label}))

    return post


def default_planner(services: Services) -> Planner:
    """The LLM planner when a model is configured (the offline router is its fallback);
    else the offline router."""
    router = OfflineRouter(services.inventory)
    if not services.settings.llm_configured:
        return router
    from opsbot.intent.llm import LLMPlanner, LLMUnavailable

    try:
        return LLMPlanner(services, fallback=router)
    except LLMUnavailable as exc:
        log.warning("llm.unavailable", error=str(exc))
        return router


def result_text(result: SkillResult, limit: int = 3000) -> str:
    """A skill result as plain text for a model: summary, tables and code; images left out."""
    body = Message(
        thread="", step=Step.RESULT, blocks=[b for b in result.blocks if not isinstance(b, Image)]
    ).plain
    text = f"{'ok' if result.ok else 'failed'}: {result.summary}\n{body}".strip()
    return text if len(text) <= limit else text[:limit] + "\n[truncated]"


def describe(invocation: Invocation) -> str:
    args = " ".join(f"{k}={v}" for k, v in redact_value(invocation.args).items())
    return f"{invocation.skill} {args}".strip()


class Engine:
    def __init__(self, services: Services, planner: Planner | None = None) -> None:
        self.services = services
        self.planner: Planner = planner or default_planner(services)
        self._explainer = OfflineRouter()  # scores withheld skills to explain a refusal

    # -- catalog -------------------------------------------------------------------------

    def catalog(self, actor: Actor, channel: str) -> list[Skill[Any]]:
        """The skills ``actor`` may call (allowed or with approval) in ``channel``."""
        policy = self.services.policy
        return [
            s
            for s in self.services.registry
            if policy.permitted(actor, s.name, channel=channel, namespaced=s.namespaced)
        ]

    # -- one request ---------------------------------------------------------------------

    async def handle(self, request: Request, reply: Reply) -> None:
        """Run one request to its end; never raises for bad input or a failing backend."""
        reply = stamped(reply, request.actor)
        started = time.monotonic()
        audit = self.services.audit
        base: dict[str, Any] = {
            "actor": request.actor.id,
            "channel": request.channel,
            "thread": request.thread_key,
            "request_id": request.id,
        }
        outcome = "ok"
        try:
            await self.sweep_expired(reply)
            await audit.append(AuditEvent.REQUEST, **base, detail=request.text[:2000])
            try:
                plan = await self.planner.plan(
                    request,
                    self.catalog(request.actor, request.channel),
                    tools=self._tool_runner(request, reply, base),
                )
            except Exception as exc:
                log.exception("planner.failed", request_id=request.id)
                outcome = "error"
                await self._error(
                    request, reply, base, f"I could not understand that ({type(exc).__name__})."
                )
                return
            if (
                plan.planner == "offline"  # a model's own answer is posted as it is
                and plan.answer
                and not plan.invocations
                and await self._explain_refusal(request, reply, base)
            ):
                outcome = "denied"
                return
            await self._post_plan(request, reply, base, plan)
            for invocation in plan.invocations:
                await self._post_invocation(request, reply, base, invocation, plan.planner)
                outcome, _ = await self._invoke(request, reply, base, invocation)
        except Exception as exc:  # the last line of defence: answer, log, keep serving
            log.exception("engine.failed", request_id=request.id)
            outcome = "error"
            telemetry.ERRORS.labels("internal").inc()
            await reply(
                Message(
                    thread=request.thread_key,
                    step=Step.ERROR,
                    blocks=[Text(text=f"Internal error ({type(exc).__name__}); it is logged.")],
                )
            )
        finally:
            telemetry.REQUESTS.labels(request.actor.platform, outcome).inc()
            telemetry.REQUEST_LATENCY.observe(time.monotonic() - started)

    async def _explain_refusal(self, request: Request, reply: Reply, base: dict[str, Any]) -> bool:
        """When nothing the actor may call fits, but a skill policy withholds does, say so
        (and audit the denial) instead of "I don't understand". Nothing is planned or run."""
        permitted = {s.name for s in self.catalog(request.actor, request.channel)}
        withheld = [s for s in self.services.registry if s.name not in permitted]
        ranked = self._explainer.rank(parse(request.text[:2000]), withheld)
        if not ranked or ranked[0].score < self._explainer.threshold:
            return False
        skill = ranked[0].skill.name
        reason = f"no policy rule allows {request.actor.id} to call {skill} here"
        telemetry.POLICY_DECISIONS.labels("deny").inc()
        await self.services.audit.append(
            AuditEvent.POLICY,
            **base,
            skill=skill,
            outcome="deny",
            detail=f"{reason} (withheld from the planner)",
        )
        await reply(
            Message(
                thread=request.thread_key,
                step=Step.POLICY,
                blocks=[Text(text=f"Denied: {reason}.")],
            )
        )
        return True

    async def _post_plan(
        self, request: Request, reply: Reply, base: dict[str, Any], plan: Plan
    ) -> None:
        """Post the plan's notes, its usage (audit only), and its answer or question."""
        audit = self.services.audit
        thread = request.thread_key
        for note in plan.notes:
            await audit.append(AuditEvent.PLAN, **base, outcome="note", detail=note)
            await reply(Message(thread=thread, step=Step.PLAN, blocks=[Text(text=note)]))
        if plan.usage:
            await audit.append(
                AuditEvent.LLM_USAGE,
                **base,
                args=plan.usage,
                outcome=plan.planner,
                detail=Usage(**plan.usage).describe(),
            )
        if plan.answer:
            await audit.append(AuditEvent.PLAN, **base, outcome="answer", detail=plan.answer.text)
            await reply(
                Message(thread=thread, step=Step.ANSWER, blocks=[Text(text=plan.answer.text)])
            )
        elif plan.clarify:
            await audit.append(
                AuditEvent.PLAN,
                **base,
                skill=plan.clarify.skill or "",
                outcome="clarify",
                detail=plan.clarify.question,
            )
            await reply(
                Message(thread=thread, step=Step.ANSWER, blocks=[Text(text=plan.clarify.question)])
            )

    async def _post_invocation(
        self,
        request: Request,
        reply: Reply,
        base: dict[str, Any],
        invocation: Invocation,
        planner: str,
    ) -> None:
        await self.services.audit.append(
            AuditEvent.PLAN,
            **base,
            skill=invocation.skill,
            args=invocation.args,
            outcome="invoke",
            detail=f"planner={planner} {invocation.rationale}".strip(),
        )
        why = f" — {invocation.rationale}" if invocation.rationale else ""
        await reply(
            Message(
                thread=request.thread_key,
                step=Step.PLAN,
                blocks=[Text(text=f"Plan ({planner}): `{describe(invocation)}`{why}")],
            )
        )

    def _tool_runner(self, request: Request, reply: Reply, base: dict[str, Any]) -> ToolRunner:
        """Lets a planner look at data: read skills only, each through policy and audit, each
        posted in the thread like any other step."""

        async def run(invocation: Invocation) -> str:
            skill = self.services.registry.get(invocation.skill)
            if skill is None or skill.risk is not Risk.READ:
                return "refused: only read skills run while planning; writes go to human approval"
            await self._post_invocation(request, reply, base, invocation, self.planner.name)
            outcome, result = await self._invoke(request, reply, base, invocation)
            return result_text(result) if result is not None else f"not run: {outcome}"

        return run

    async def _invoke(
        self, request: Request, reply: Reply, base: dict[str, Any], invocation: Invocation
    ) -> tuple[str, SkillResult | None]:
        """Policy, then run or request approval. Returns (outcome, result if it ran)."""
        audit = self.services.audit
        thread = request.thread_key
        skill = self.services.registry.get(invocation.skill)
        permitted = {s.name for s in self.catalog(request.actor, request.channel)}
        if skill is None or skill.name not in permitted:
            reason = (
                f"unknown skill {invocation.skill!r}"
                if skill is None
                else f"{invocation.skill} is not available to {request.actor.id} here"
            )
            await audit.append(
                AuditEvent.POLICY,
                **base,
                skill=invocation.skill,
                args=invocation.args,
                outcome="deny",
                detail=reason,
            )
            telemetry.POLICY_DECISIONS.labels("deny").inc()
            await reply(
                Message(thread=thread, step=Step.POLICY, blocks=[Text(text=f"Refused: {reason}.")])
            )
            return "denied", None
        try:
            args = skill.parse_args(invocation.args)
        except ValidationError as exc:
            detail = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
            )
            await self._error(
                request,
                reply,
                base,
                f"Invalid arguments for {skill.name}: {detail}",
                skill=skill.name,
                args=invocation.args,
            )
            return "error", None
        invocation = Invocation(
            skill=skill.name,
            args=args.model_dump(mode="json", exclude_none=True),
            rationale=invocation.rationale,
        )
        decision = self.services.policy.decide(
            request.actor,
            skill.name,
            channel=request.channel,
            namespace=invocation.namespace,
            namespaced=skill.namespaced,
            args=invocation.args,
        )
        if isinstance(decision, Allow):
            effect, text = "allow", f"Allowed by rule *{decision.rule}*."
        elif isinstance(decision, Deny):
            effect, text = "deny", f"Denied: {decision.reason}."
        else:
            effect = "approve"
            text = (
                f"Needs approval by {decision.min_approvals} of {', '.join(decision.approvers)} "
                f"(rule *{decision.rule}*)."
            )
        telemetry.POLICY_DECISIONS.labels(effect).inc()
        await audit.append(
            AuditEvent.POLICY,
            **base,
            skill=skill.name,
            args=invocation.args,
            outcome=effect,
            detail=decision.reason if isinstance(decision, Deny) else decision.rule,
        )
        await reply(Message(thread=thread, step=Step.POLICY, blocks=[Text(text=text)]))
        if isinstance(decision, Deny):
            return "denied", None
        if isinstance(decision, NeedsApproval):
            opened = await self._request_approval(
                request, reply, base, skill, args, invocation, decision
            )
            return ("approval" if opened else "error"), None
        ctx = SkillContext(request.actor, request, self.services)
        result = await self.execute(skill, args, ctx, base)
        await reply(result_message(thread, skill, result))
        if result.ok:
            await self._follow_up(skill, args, ctx, base, reply, thread)
        return ("ok" if result.ok else "failed"), result

    async def _request_approval(
        self,
        request: Request,
        reply: Reply,
        base: dict[str, Any],
        skill: Skill[Any],
        args: Any,
        invocation: Invocation,
        decision: NeedsApproval,
    ) -> bool:
        """Dry-run the write and open an approval request; a write whose dry run fails (it
        would not work, or the backend cannot be checked) is refused instead."""
        ctx = SkillContext(request.actor, request, self.services)
        try:
            preview = await asyncio.wait_for(skill.preview(args, ctx), self._skill_timeout())
        except (SkillError, TimeoutError) as exc:
            reason = str(exc) or f"the dry run did not finish within {self._skill_timeout():g}s"
            await self._error(
                request,
                reply,
                base,
                f"Not submitted for approval: {reason}",
                skill=skill.name,
                args=invocation.args,
            )
            return False
        approval = await self.services.approvals.open(request, invocation, decision, preview)
        telemetry.APPROVALS.labels("requested").inc()
        await self.services.audit.append(
            AuditEvent.APPROVAL_REQUESTED,
            **base,
            skill=skill.name,
            args=invocation.args,
            outcome=approval.id,
            detail=f"rule={decision.rule} approvers={','.join(decision.approvers)} "
            f"min={decision.min_approvals} expires={approval.expires_at.isoformat()}",
        )
        await reply(approval_message(approval))
        return True

    # -- execution -----------------------------------------------------------------------

    def _skill_timeout(self) -> float:
        return self.services.settings.backend_timeout * SKILL_TIMEOUT_FACTOR

    async def execute(
        self, skill: Skill[Any], args: Any, ctx: SkillContext, base: dict[str, Any]
    ) -> SkillResult:
        """Run a skill with a time limit; failures become a ``SkillResult(ok=False)``."""
        audit = self.services.audit
        dumped = args.model_dump(mode="json", exclude_none=True)
        await audit.append(
            AuditEvent.EXECUTION, **base, skill=skill.name, args=dumped, outcome="started"
        )
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(skill.run(args, ctx), self._skill_timeout())
        except NotConfigured as exc:
            result = SkillResult(ok=False, summary=str(exc), blocks=[Text(text=str(exc))])
        except SkillError as exc:
            result = SkillResult(ok=False, summary=str(exc), blocks=[Text(text=str(exc))])
        except TimeoutError:
            msg = f"{skill.name} did not finish within {self._skill_timeout():g}s; abandoned."
            result = SkillResult(ok=False, summary=msg, blocks=[Text(text=msg)])
        except Exception as exc:
            log.exception("skill.crashed", skill=skill.name)
            msg = f"{skill.name} failed unexpectedly ({type(exc).__name__}: {exc})"
            result = SkillResult(ok=False, summary=msg, blocks=[Text(text=msg)])
        elapsed = time.monotonic() - started
        outcome = "ok" if result.ok else "failed"
        telemetry.SKILL_RUNS.labels(skill.name, outcome).inc()
        telemetry.SKILL_LATENCY.labels(skill.name).observe(elapsed)
        await audit.append(
            AuditEvent.RESULT,
            **base,
            skill=skill.name,
            args=dumped,
            outcome=outcome,
            detail=f"{result.summary} ({elapsed * 1000:.0f} ms)",
        )
        return result

    # -- approvals -----------------------------------------------------------------------

    async def decide(
        self,
        approval_id: str,
        approver: Actor,
        verdict: str,
        reply: Reply,
        *,
        reason: str = "",
        channel: str = "",
    ) -> VoteOutcome:
        """An authenticated ``approver`` clicked Approve/Deny (or used the CLI).

        Posts the outcome into the approval's thread; when this call completes the approval,
        runs the action (exactly once across replicas) and posts its result.
        """
        reply = stamped(reply, approver)
        outcome = await self.services.approvals.vote(
            approval_id, approver, verdict, self.services.policy, reason=reason
        )
        approval = outcome.approval
        thread = approval.thread if approval else ""
        base: dict[str, Any] = {
            "actor": approver.id,
            "channel": channel or (approval.channel if approval else ""),
            "thread": thread,
            "request_id": approval.request_id if approval else "",
        }
        skill_name = approval.skill if approval else ""
        event = {
            VoteStatus.RECORDED: AuditEvent.APPROVAL_VOTE,
            VoteStatus.APPROVED: AuditEvent.APPROVAL_APPROVED,
            VoteStatus.DENIED: AuditEvent.APPROVAL_DENIED,
            VoteStatus.EXPIRED: AuditEvent.APPROVAL_EXPIRED,
        }.get(outcome.status, AuditEvent.APPROVAL_REFUSED)
        telemetry.APPROVALS.labels(outcome.status.value).inc()
        await self.services.audit.append(
            event,
            **base,
            skill=skill_name,
            args=approval.args if approval else {},
            outcome=outcome.status.value,
            detail=f"{approval_id} {verdict} {reason}".strip() + f": {outcome.message}",
        )
        await reply(
            decision_message(approval_id, approver, verdict, outcome, thread or approval_id, reason)
        )
        if outcome.status is VoteStatus.APPROVED and approval is not None:
            await self._run_approved(approval, reply, base)
        return outcome

    async def sweep_expired(self, reply: Reply | None = None) -> list[Approval]:
        """Move pending approvals past their ``ttl`` to ``expired``; audit and announce each."""
        expired = await self.services.approvals.expire_due()
        for approval in expired:
            telemetry.APPROVALS.labels("expired").inc()
            await self.services.audit.append(
                AuditEvent.APPROVAL_EXPIRED,
                actor=approval.requester,
                channel=approval.channel,
                thread=approval.thread,
                request_id=approval.request_id,
                skill=approval.skill,
                args=approval.args,
                outcome="expired",
                detail=f"{approval.id} expired at {approval.expires_at.isoformat()} with "
                f"{approval.approvals}/{approval.min_approvals} approvals",
            )
            if reply is not None:
                text = (
                    f"Approval `{approval.id}` expired without enough approvals; nothing was run."
                )
                await reply(
                    Message(
                        thread=approval.thread,
                        step=Step.APPROVAL,
                        blocks=[Text(text=text)],
                        approval_id=approval.id,
                    )
                )
        return expired

    async def _run_approved(self, approval: Approval, reply: Reply, base: dict[str, Any]) -> None:
        skill = self.services.registry.get(approval.skill)
        requester = Actor(id=approval.requester)
        request = Request(
            actor=requester,
            channel=approval.channel,
            text="",
            thread=approval.thread,
            id=approval.request_id,
        )
        if skill is None:
            result = SkillResult(ok=False, summary=f"skill {approval.skill} is no longer installed")
        else:
            try:
                args = skill.parse_args(approval.args)
            except ValidationError as exc:
                result = SkillResult(
                    ok=False, summary=f"stored arguments no longer valid: {exc.errors()[0]['msg']}"
                )
            else:
                exec_base = {**base, "actor": approval.requester}
                ctx = SkillContext(requester, request, self.services)
                result = await self.execute(skill, args, ctx, exec_base)
        await self.services.approvals.finish(approval.id, ok=result.ok, result=result.summary)
        await reply(result_message(approval.thread, skill, result, approval_id=approval.id))
        if result.ok and skill is not None:
            await self._follow_up(skill, args, ctx, exec_base, reply, approval.thread)

    async def _follow_up(
        self,
        skill: Skill[Any],
        args: Any,
        ctx: SkillContext,
        base: dict[str, Any],
        reply: Reply,
        thread: str,
    ) -> None:
        """Report what happened after a write (e.g. the rollout), bounded by the rollout timeout."""
        limit = self.services.settings.rollout_timeout + self._skill_timeout()
        try:
            result = await asyncio.wait_for(skill.follow_up(args, ctx), limit)
        except (SkillError, TimeoutError) as exc:
            result = SkillResult(ok=False, summary=f"could not follow up: {exc or 'timed out'}")
        if result is None:
            return
        await self.services.audit.append(
            AuditEvent.FOLLOW_UP,
            **base,
            skill=skill.name,
            args=args.model_dump(mode="json", exclude_none=True),
            outcome="ok" if result.ok else "failed",
            detail=result.summary,
        )
        await reply(result_message(thread, skill, result))

    async def _error(
        self,
        request: Request,
        reply: Reply,
        base: dict[str, Any],
        text: str,
        *,
        skill: str = "",
        args: dict[str, Any] | None = None,
    ) -> None:
        telemetry.ERRORS.labels("request").inc()
        await self.services.audit.append(
            AuditEvent.ERROR, **base, skill=skill, args=args or {}, outcome="error", detail=text
        )
        await reply(Message(thread=request.thread_key, step=Step.ERROR, blocks=[Text(text=text)]))


# -- messages ------------------------------------------------------------------------------


def result_message(
    thread: str, skill: Skill[Any] | None, result: SkillResult, approval_id: str | None = None
) -> Message:
    name = skill.name if skill else "?"
    head = Text(
        text=f"`{name}`: {result.summary}" if result.ok else f"`{name}` failed: {result.summary}"
    )
    details = [b for b in result.blocks if not (isinstance(b, Text) and b.text == result.summary)]
    return Message(
        thread=thread,
        step=Step.RESULT if result.ok else Step.ERROR,
        blocks=[head, *details],
        approval_id=approval_id,
    )


def approval_message(approval: Approval) -> Message:
    blocks: list[Any] = [
        Text(
            text=(
                f"Approval `{approval.id}` needed: `{describe(approval.invocation)}` requested by "
                f"{approval.requester}. Needs {approval.min_approvals} of {', '.join(approval.approvers)} "
                f"(not the requester); expires {approval.expires_at:%H:%M:%S} UTC."
            )
        ),
    ]
    if approval.preview:
        blocks.append(Code(code=approval.preview, language="text"))
    blocks.append(
        Buttons(
            buttons=[
                Button(
                    label="Approve", action="approve", value=approval.id, style=ButtonStyle.PRIMARY
                ),
                Button(label="Deny", action="deny", value=approval.id, style=ButtonStyle.DANGER),
            ]
        )
    )
    return Message(
        thread=approval.thread, step=Step.APPROVAL, blocks=blocks, approval_id=approval.id
    )


def decision_message(
    approval_id: str, approver: Actor, verdict: str, outcome: VoteOutcome, thread: str, reason: str
) -> Message:
    status = outcome.status
    if status is VoteStatus.APPROVED:
        text = f"Approval `{approval_id}` approved by {approver.label}; running it now."
    elif status is VoteStatus.RECORDED:
        text = f"{approver.label} approved `{approval_id}`: {outcome.message}."
    elif status is VoteStatus.DENIED:
        text = f"Approval `{approval_id}` denied by {approver.label}" + (
            f": {reason}" if reason else "."
        )
    else:
        text = f"Not {verdict}d: {outcome.message}."
    step = (
        Step.APPROVAL
        if status in (VoteStatus.APPROVED, VoteStatus.RECORDED, VoteStatus.DENIED)
        else Step.ERROR
    )
    return Message(thread=thread, step=step, blocks=[Text(text=text)], approval_id=approval_id)
