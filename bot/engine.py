"""The request flow of DESIGN.md: request -> plan -> policy -> (approval) -> skill -> messages.

The engine is the only caller of skills. Each step is one call on the request's
:class:`~opsbot.trail.Trail`, which writes the audit record and posts the message in the
thread; the sentences come from :mod:`opsbot.wording`. Planners only see the skills the actor
may call in this channel; whatever they return is re-validated and re-decided here, so a
planner (or a model behind it) can never widen what runs. Approvals are decided only through
:meth:`Engine.decide`, which adapters call for button clicks and CLI commands by an
authenticated identity; a suggested-action button runs through :meth:`Engine.click` as the
clicker's own request.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import dataclasses
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from functools import partial
from typing import Any

import structlog
from pydantic import BaseModel, ValidationError

from opsbot import telemetry, wording
from opsbot.actions import Actions
from opsbot.approvals import Approval, State, VoteOutcome, VoteStatus
from opsbot.audit import AuditEvent
from opsbot.clarify import Clarifications
from opsbot.followups import FollowUp, FollowUps, FollowUpState
from opsbot.intent import screen
from opsbot.intent.base import Planner, ToolRunner
from opsbot.intent.offline import OfflineRouter
from opsbot.intent.speech import request_mood
from opsbot.model import (
    ActionButton,
    Actor,
    Answer,
    Audience,
    Block,
    Clarify,
    Code,
    Image,
    Invocation,
    Message,
    Outcome,
    Plan,
    Request,
    Run,
    SkillResult,
    Step,
    Text,
)
from opsbot.policy import Allow, Deny, NeedsApproval
from opsbot.services import Services
from opsbot.skills.base import NotConfigured, Risk, Skill, SkillContext, SkillError
from opsbot.store import now, unavailable
from opsbot.trail import Reply, Trail
from opsbot.usage import Usage

log = structlog.get_logger(__name__)

SKILL_TIMEOUT_FACTOR = 3  # a skill may take this many backend timeouts before it is abandoned
BUTTON = "button"  # the planner name of a suggested action clicked by a person
#: handles a button that is not a suggested action: (action id, clicker, reply, channel)
ButtonHandler = Callable[[str, Actor, Reply, str], Awaitable[None]]

__all__ = ["Engine", "InFlight", "Reply", "default_planner", "result_text"]


_COUNTED: contextvars.ContextVar[bool] = contextvars.ContextVar("opsbot_counted", default=False)


class InFlight:
    """Counts the work being handled (requests, clicks, approved actions, follow-ups), so that
    a shutdown can wait for it: ``async with engine.inflight(): ...`` around each."""

    def __init__(self) -> None:
        self.count = 0
        self._idle = asyncio.Event()
        self._idle.set()

    @contextlib.asynccontextmanager
    async def __call__(self) -> AsyncIterator[None]:
        if _COUNTED.get():  # already counted (an adapter's handler around an engine call)
            yield
            return
        token = _COUNTED.set(True)
        self.count += 1
        self._idle.clear()
        telemetry.IN_FLIGHT.inc()
        try:
            yield
        finally:
            _COUNTED.reset(token)
            self.count -= 1
            telemetry.IN_FLIGHT.dec()
            if self.count == 0:
                self._idle.set()

    async def drain(self, within: float) -> bool:
        """Wait until no work is in flight (True), or ``within`` seconds (False). Work that
        was handed to a task just before is given a turn of the loop to start."""
        deadline = time.monotonic() + within
        while True:
            await asyncio.sleep(0.05)  # a task created by a handler that just returned starts
            if self.count == 0:
                return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), left)


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


#: the follow-up loops' hand-backs still going after a second stop (kept from collection)
_HANDING_BACK: set[asyncio.Task[None]] = set()


def _forget(tasks: dict[str, asyncio.Task[None]], key: str, _: asyncio.Task[None]) -> None:
    tasks.pop(key, None)


def _dump(args: BaseModel) -> dict[str, Any]:
    return args.model_dump(mode="json", exclude_none=True)


class Engine:
    def __init__(self, services: Services, planner: Planner | None = None) -> None:
        self.services = services
        self.planner: Planner = planner or default_planner(services)
        self.actions = Actions(services.store)
        #: requests waiting in their thread for the answer to the bot's question
        self.clarifications = Clarifications(services.store, OfflineRouter(services.inventory))
        #: buttons that are not suggested actions, by the prefix of their id (an incident's
        #: Ack: opsbot.incidents); ``click`` hands them to their handler
        self.buttons: dict[str, ButtonHandler] = {}
        #: the work being handled now (``opsbot serve`` waits for it on SIGTERM)
        self.inflight = InFlight()
        #: where follow-ups of writes go: None runs them at once, here (the shell, ``ask``);
        #: ``opsbot serve`` keeps them in the database for the leader (:meth:`run_follow_ups`)
        self.follow_ups: FollowUps | None = None
        #: this replica, as approvals record who runs them (``opsbot serve``: its identity in
        #: the leader election)
        self.identity = "this process"
        self._catalogs: OrderedDict[tuple[str, Actor, str, int, int], set[str]] = OrderedDict()

    # -- catalog -------------------------------------------------------------------------

    def catalog(self, actor: Actor, channel: str) -> list[Skill[Any, Any]]:
        """The skills ``actor`` may call (allowed or with approval) in ``channel``."""
        policy = self.services.policy
        return [
            s
            for s in self.services.registry
            if policy.permitted(actor, s.name, channel=channel, namespaced=s.namespaced)
        ]

    def _permitted(self, request: Request) -> set[str]:
        """The names of :meth:`catalog` for ``request`` (worked out once per request)."""
        services = self.services
        key = (
            request.id,
            request.actor,
            request.channel,
            id(services.policy),
            len(services.registry),
        )
        names = self._catalogs.get(key)
        if names is None:
            names = {s.name for s in self.catalog(request.actor, request.channel)}
            self._catalogs[key] = names
            while len(self._catalogs) > 512:  # requests in flight, and a few past ones
                self._catalogs.popitem(last=False)
        return names

    def _approval_trail(self, approval: Approval, post: Reply) -> Trail:
        """The trail of the request that opened ``approval``, with steps by its requester."""
        return Trail(
            audit=self.services.audit,
            post=post,
            actor=approval.requester,
            channel=approval.channel,
            thread=approval.thread,
            request_id=approval.request_id,
        )

    def trail(self, request: Request, post: Reply) -> Trail:
        return Trail(
            audit=self.services.audit,
            post=post,
            actor=request.actor.id,
            channel=request.channel,
            thread=request.thread_key,
            request_id=request.id,
            label=request.actor.label,
        )

    # -- one request ---------------------------------------------------------------------

    async def handle(self, request: Request, reply: Reply) -> Outcome:
        """Run one request to its end and say how it ended; never raises for bad input or a
        failing backend."""
        trail = self.trail(request, reply)

        async def plan() -> Plan:
            if (problem := screen.unreadable(request.text)) is not None:
                return Answer(text=problem)  # empty or binary: no planner is asked
            permitted = self._permitted(request)
            catalog = [s for s in self.services.registry if s.name in permitted]
            answered = await self.clarifications.answer(request, catalog)
            if answered is not None:  # it answers the question the thread was left with
                return answered
            return await self.planner.plan(
                request, catalog, tools=self._tool_runner(request, trail)
            )

        async with self.inflight():
            return await self._run_request(request, trail, plan)

    async def awaits_answer(self, thread: str, actor: Actor) -> bool:
        """Whether ``thread`` holds a question of the bot's that ``actor`` was asked and has
        not answered yet (an adapter without threads, the shell, sends the next line there)."""
        pending = await self.clarifications.pending(thread)
        return pending is not None and pending.requester == actor.id

    async def click(self, action_id: str, clicker: Actor, reply: Reply, *, channel: str) -> None:
        """A suggested-action button was clicked: run its invocation as ``clicker``'s own
        request in the thread it was offered in (policy, approval, audit as if typed)."""
        async with self.inflight():
            await self._click(action_id, clicker, reply, channel=channel)

    async def _click(self, action_id: str, clicker: Actor, reply: Reply, *, channel: str) -> None:
        for prefix, handler in self.buttons.items():
            if action_id.startswith(prefix):
                await handler(action_id, clicker, reply, channel)
                return
        offered = await self.actions.get(action_id)
        if offered is None:
            request = Request(actor=clicker, channel=channel, text=f"(clicked {action_id})")
            trail = self.trail(request, reply)
            await trail.step(
                Step.ERROR,
                AuditEvent.ERROR,
                wording.unknown_action(action_id),
                outcome="error",
                detail=f"unknown suggested action {action_id}",
                audience=Audience.CLICKER,
            )
            return
        request = Request(
            actor=clicker,
            channel=offered.channel or channel,
            text=f"(clicked) {offered.label}",
            thread=offered.thread,
        )
        trail = self.trail(request, reply)
        await self.clarifications.drop(offered.thread)  # a click settles a question there

        async def planned() -> Plan:
            return Run(
                invocations=[offered.invocation.model_copy(update={"rationale": "suggested"})],
                planner=BUTTON,
            )

        await self._run_request(request, trail, planned)

    async def run(
        self,
        invocation: Invocation,
        actor: Actor,
        reply: Reply,
        *,
        channel: str,
        thread: str,
        planner: str = "system",
        request_id: str = "",
        text: str = "",
    ) -> Outcome:
        """Run a fixed ``invocation`` as ``actor``'s request in ``thread`` (policy, approval,
        audit and every step posted, as for a typed request), e.g. the triage of a new
        incident by the system identity of the alert's receiver."""
        request = Request(
            actor=actor,
            channel=channel,
            text=text or f"({planner}) {wording.describe(invocation)}",
            thread=thread,
        )
        if request_id:
            request = dataclasses.replace(request, id=request_id)

        async def planned() -> Plan:
            return Run(invocations=[invocation], planner=planner)

        async with self.inflight():
            return await self._run_request(request, self.trail(request, reply), planned)

    async def _run_request(
        self, request: Request, trail: Trail, plan: Callable[[], Awaitable[Plan]]
    ) -> Outcome:
        started = time.monotonic()
        outcome = "ok"
        try:
            # held: committed with the plan and policy steps (nothing is said before)
            await trail.record(AuditEvent.REQUEST, detail=request.text[:2000], hold=True)
            try:
                planned = await plan()
            except Exception as exc:
                if unavailable(exc):  # the database, not the planner: said below
                    raise
                log.exception("planner.failed", request_id=request.id)
                await self._error(trail, wording.planner_failed(exc))
                outcome = "error"
                return Outcome.ERROR
            outcome = await self._follow_plan(request, trail, planned)
        except Exception as exc:  # the last line of defence: answer, log, keep serving
            outcome = "error"
            if unavailable(exc):  # nothing can be recorded: say so, and nothing runs
                log.error("engine.database_unavailable", request_id=request.id, error=str(exc))
                telemetry.ERRORS.labels("database").inc()
                with contextlib.suppress(Exception):
                    await trail.flush()  # records held for the plan: not written, dropped
                with contextlib.suppress(Exception):
                    await trail.say(Step.ERROR, wording.database_down())
                return Outcome.ERROR
            log.exception("engine.failed", request_id=request.id)
            telemetry.ERRORS.labels("internal").inc()
            await trail.say(Step.ERROR, wording.internal_error(exc))
        finally:
            try:
                await trail.flush()  # whatever is still held
            except Exception:
                log.exception("engine.flush_failed", request_id=request.id)
            telemetry.REQUESTS.labels(request.actor.platform, outcome).inc()
            telemetry.REQUEST_LATENCY.observe(time.monotonic() - started)
        return Outcome.of(outcome)

    async def _follow_plan(self, request: Request, trail: Trail, plan: Plan) -> str:
        for note in plan.notes:
            await trail.step(Step.PLAN, AuditEvent.PLAN, note, outcome="note", detail=note)
        if plan.usage:
            await trail.record(
                AuditEvent.LLM_USAGE,
                args=plan.usage,
                outcome=plan.planner,
                detail=Usage(**plan.usage).describe(),
            )
        if isinstance(plan, Answer):
            if plan.unmatched and await self._explain_refusal(request, trail):
                return "denied"
            if plan.about is not None:
                await self._about_write(request, trail, plan.about, plan.text)
                return "ok"
            await trail.step(
                Step.ANSWER, AuditEvent.PLAN, plan.text, outcome="answer", detail=plan.text
            )
            return Outcome.UNMATCHED if plan.unmatched else Outcome.OK
        if isinstance(plan, Clarify):
            await self._ask(request, trail, plan)
            return Outcome.CLARIFY
        if plan.text:
            await trail.step(
                Step.ANSWER, AuditEvent.PLAN, plan.text, outcome="answer", detail=plan.text
            )
        outcome = "ok"
        mood = request_mood(request.text)
        for invocation in plan.invocations:
            skill = self.services.registry.get(invocation.skill)
            if (
                plan.planner != BUTTON
                and skill is not None
                and skill.risk is not Risk.READ
                and not mood.asks_for_write
            ):  # whatever a planner proposed: no write from a negation, question or report
                await self._about_write(request, trail, invocation, wording.about_write(invocation))
                continue
            await self._announce(trail, invocation, plan.planner)
            ended, _ = await self._invoke(request, trail, invocation)
            outcome = ended if outcome == "ok" else outcome  # the first that did not succeed
        return outcome

    async def _about_write(
        self, request: Request, trail: Trail, invocation: Invocation, text: str
    ) -> None:
        """A request talked about a write without asking for it: say so, show its dry run
        when the actor may call it, and plan nothing (audited as ``about``)."""
        mood = request_mood(request.text)
        blocks: list[Block] = [Text(text=text)]
        skill = self.services.registry.get(invocation.skill)
        if skill is not None and skill.name in self._permitted(request):
            try:
                preview = await self._dry_run(skill, skill.parse_args(invocation.args), request)
            except (ValidationError, SkillError):
                preview = ""
            if preview:
                blocks.append(Code(code=preview, language="text"))
        await trail.step(
            Step.ANSWER,
            AuditEvent.PLAN,
            blocks,
            skill=invocation.skill,
            args=invocation.args,
            outcome="about",
            detail=f"not planned: the request is {mood.value}, not a request for it",
        )

    async def _ask(self, request: Request, trail: Trail, plan: Clarify) -> None:
        """Ask the planner's question: the request waits in the thread for a short answer
        (:mod:`opsbot.clarify`), and each known choice is a button that runs it whole, as
        the clicker's own request."""
        kept = await self.clarifications.keep(plan, request)
        buttons = [
            ActionButton(
                id=uuid.uuid4().hex[:12], label=wording.describe(choice), invocation=choice
            )
            for choice in plan.choices
        ]
        for button in buttons:
            await self.actions.offer(button, thread=trail.thread, channel=trail.channel)
        waiting = (
            f" (waits for {', '.join(kept.missing)} until {kept.expires_at:%H:%M:%S} UTC)"
            if kept
            else ""
        )
        await trail.step(
            Step.ANSWER,
            AuditEvent.PLAN,
            [Text(text=plan.question), *buttons],
            skill=plan.skill or "",
            args=plan.args,
            outcome="clarify",
            detail=plan.question + waiting,
        )

    async def _explain_refusal(self, request: Request, trail: Trail) -> bool:
        """When nothing the actor may call fits, but a skill policy withholds does, say so
        (and audit the denial) instead of "I don't understand". Nothing is planned or run."""
        permitted = self._permitted(request)
        withheld = [s for s in self.services.registry if s.name not in permitted]
        skill = await self.planner.explain(request, withheld)
        if skill is None:
            return False
        reason = wording.withheld(skill, request.actor)
        telemetry.POLICY_DECISIONS.labels("deny").inc()
        await trail.step(
            Step.POLICY,
            AuditEvent.POLICY,
            wording.denied(reason),
            skill=skill,
            outcome="deny",
            detail=f"{reason} (withheld from the planner)",
        )
        return True

    async def _announce(self, trail: Trail, invocation: Invocation, planner: str) -> None:
        """The plan step of ``invocation``, held: it is committed and posted with the policy
        step that always follows it (:meth:`_invoke`)."""
        await trail.step(
            Step.PLAN,
            AuditEvent.PLAN,
            wording.plan(invocation, planner),
            skill=invocation.skill,
            args=invocation.args,
            outcome="invoke",
            detail=f"planner={planner} {invocation.rationale}".strip(),
            hold=True,
        )

    def _tool_runner(self, request: Request, trail: Trail) -> ToolRunner:
        """Lets a planner look at data: read skills only, each through policy and audit, each
        posted in the thread like any other step."""

        async def run(invocation: Invocation) -> str:
            skill = self.services.registry.get(invocation.skill)
            if skill is None or skill.risk is not Risk.READ:
                return "refused: only read skills run while planning; writes go to human approval"
            await self._announce(trail, invocation, self.planner.name)
            outcome, result = await self._invoke(request, trail, invocation)
            return result_text(result) if result is not None else f"not run: {outcome}"

        return run

    async def _invoke(
        self, request: Request, trail: Trail, invocation: Invocation
    ) -> tuple[str, SkillResult | None]:
        """Policy, then run or request approval. Returns (outcome, result if it ran)."""
        skill = self.services.registry.get(invocation.skill)
        if skill is None or skill.name not in self._permitted(request):
            text = (
                wording.unknown_skill(invocation.skill)
                if skill is None
                else wording.not_available(invocation.skill, request.actor)
            )
            telemetry.POLICY_DECISIONS.labels("deny").inc()
            await trail.step(
                Step.POLICY,
                AuditEvent.POLICY,
                text,
                skill=invocation.skill,
                args=invocation.args,
                outcome="deny",
                detail=text.removeprefix("Refused: ").rstrip("."),
            )
            return "denied", None
        try:
            args = skill.parse_args(invocation.args)
        except ValidationError as exc:
            await self._error(
                trail,
                wording.invalid_args(skill.name, exc),
                skill=skill.name,
                args=invocation.args,
            )
            return "error", None
        invocation = Invocation(skill=skill.name, args=_dump(args), rationale=invocation.rationale)
        decision = self.services.policy.decide(
            request.actor,
            skill.name,
            channel=request.channel,
            namespace=invocation.namespace,
            namespaced=skill.namespaced,
            args=invocation.args,
        )
        if isinstance(decision, Allow):
            effect, text, detail = "allow", wording.allowed(decision.rule), decision.rule
        elif isinstance(decision, Deny):
            effect, text, detail = "deny", wording.denied(decision.reason), decision.reason
        else:
            effect, detail = "approve", decision.rule
            text = wording.needs_approval(decision.min_approvals, decision.approvers, decision.rule)
        telemetry.POLICY_DECISIONS.labels(effect).inc()
        # an allowed read goes on while its plan and policy steps are committed and posted
        # (a read sends nothing that needs them on record first); any other waits for them
        read = isinstance(decision, Allow) and skill.risk is Risk.READ
        await trail.step(
            Step.POLICY,
            AuditEvent.POLICY,
            text,
            skill=skill.name,
            args=invocation.args,
            outcome=effect,
            detail=detail,
            hold=read,
        )
        if read:
            trail.flush_soon()
        if isinstance(decision, Deny):
            return "denied", None
        if isinstance(decision, NeedsApproval):
            opened = await self._request_approval(request, trail, skill, args, invocation, decision)
            return ("approval" if opened else "error"), None
        ctx = self.context(skill, request, trail)
        result = await self.execute(skill, args, ctx, trail)
        await self._post_result(trail, skill.name, result)
        if result.ok:
            await self._follow_up(skill, args, ctx, trail)
        return ("ok" if result.ok else "failed"), result

    def context(
        self, skill: Skill[Any, Any], request: Request, trail: Trail | None = None
    ) -> SkillContext[Any]:
        """What ``skill`` runs with for ``request``: its own backend, the shared settings, the
        backend identity the policy maps the actor to and, with the request's ``trail``, a
        way to run read skills as this request (each through policy, audit and the thread)."""
        registry = self.services.registry
        return SkillContext(
            actor=request.actor,
            request=request,
            backend=registry.backend_of(skill.name),
            settings=self.services.settings,
            impersonate=self.services.impersonation(request.actor),
            backends=registry.backends,
            read=self._reader(skill, request, trail) if trail is not None else None,
        )

    def _reader(
        self, caller: Skill[Any, Any], request: Request, trail: Trail
    ) -> Callable[[Invocation], Awaitable[SkillResult | None]]:
        async def read(invocation: Invocation) -> SkillResult | None:
            skill = self.services.registry.get(invocation.skill)
            if skill is None or skill.risk is not Risk.READ:
                raise SkillError(f"{caller.name} may only run read skills, not {invocation.skill}")
            await self._announce(trail, invocation, caller.name)
            _, result = await self._invoke(request, trail, invocation)
            return result

        return read

    async def _request_approval(
        self,
        request: Request,
        trail: Trail,
        skill: Skill[Any, Any],
        args: Any,
        invocation: Invocation,
        decision: NeedsApproval,
    ) -> bool:
        """Dry-run the write and open an approval request; a write whose dry run fails (it
        would not work, or the backend cannot be checked) is refused instead."""
        try:
            preview = await self._dry_run(skill, args, request)
        except SkillError as exc:
            await self._error(
                trail, wording.not_submitted(str(exc)), skill=skill.name, args=invocation.args
            )
            return False
        approval = await self.services.approvals.open(request, invocation, decision, preview)
        telemetry.APPROVALS.labels("requested").inc()
        await trail.step(
            Step.APPROVAL,
            AuditEvent.APPROVAL_REQUESTED,
            [approval.card()],
            skill=skill.name,
            args=invocation.args,
            outcome=approval.id,
            detail=f"rule={decision.rule} approvers={','.join(decision.approvers)} "
            f"min={decision.min_approvals} expires={approval.expires_at.isoformat()}",
            approval_id=approval.id,
        )
        return True

    async def _dry_run(self, skill: Skill[Any, Any], args: Any, request: Request) -> str:
        """``skill``'s preview of ``args`` for ``request`` (what the write would do), within
        the skill timeout. Raises :class:`SkillError` when it fails or does not finish in
        time (the message says which)."""
        limit = self._skill_timeout()
        try:
            return await asyncio.wait_for(skill.preview(args, self.context(skill, request)), limit)
        except (SkillError, TimeoutError) as exc:
            if isinstance(exc, SkillError) and str(exc):
                raise
            raise SkillError(f"the dry run did not finish within {limit:g}s") from exc

    # -- execution -----------------------------------------------------------------------

    def _skill_timeout(self) -> float:
        return self.services.settings.backend_timeout * SKILL_TIMEOUT_FACTOR

    async def execute(
        self, skill: Skill[Any, Any], args: Any, ctx: SkillContext[Any], trail: Trail
    ) -> SkillResult:
        """Run a skill with a time limit; failures become a ``SkillResult(ok=False)``.

        A write's start is its own audit record (``skill.execution``, before anything is
        sent: a crash mid-write leaves it); a read's one record is its result, which says
        what ran, with which arguments, how it ended and how long it took."""
        dumped = _dump(args)
        if skill.risk is not Risk.READ:
            await trail.record(
                AuditEvent.EXECUTION, skill=skill.name, args=dumped, outcome="started"
            )
        started = time.monotonic()
        try:
            result = await asyncio.wait_for(skill.run(args, ctx), self._skill_timeout())
        except (NotConfigured, SkillError) as exc:
            result = SkillResult(ok=False, summary=str(exc))
        except TimeoutError:
            result = SkillResult(
                ok=False, summary=wording.timed_out(skill.name, self._skill_timeout())
            )
        except Exception as exc:
            log.exception("skill.crashed", skill=skill.name)
            result = SkillResult(ok=False, summary=wording.crashed(skill.name, exc))
        elapsed = time.monotonic() - started
        outcome = "ok" if result.ok else "failed"
        telemetry.SKILL_RUNS.labels(skill.name, outcome).inc()
        telemetry.SKILL_LATENCY.labels(skill.name).observe(elapsed)
        change = result.data.get("change")  # what a write sent (its patch), for reviewers
        await trail.record(
            AuditEvent.RESULT,
            skill=skill.name,
            args={**dumped, "change": change} if change is not None else dumped,
            outcome=outcome,
            detail=f"{result.summary} ({elapsed * 1000:.0f} ms)",
        )
        return result

    async def _post_result(
        self, trail: Trail, skill: str, result: SkillResult, approval_id: str | None = None
    ) -> None:
        """Post a result in the thread (its audit record is ``execute``'s); suggested-action
        buttons in it are kept so a click on any replica can run them."""
        details = [b for b in result.blocks if getattr(b, "text", None) != result.summary]
        for block in details:
            if isinstance(block, ActionButton):
                await self.actions.offer(block, thread=trail.thread, channel=trail.channel)
        await trail.say(
            Step.RESULT if result.ok else Step.ERROR,
            [wording.result_head(skill, result), *details],
            approval_id=approval_id,
        )

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
        thread: str = "",
    ) -> VoteOutcome:
        """An authenticated ``approver`` clicked Approve/Deny (or used the CLI).

        Posts the outcome into the approval's thread and the updated approval card; when this
        call completes the approval, runs the action (exactly once across replicas) and posts
        its result. A vote that changes nothing is answered to the clicker only. When the
        database cannot be reached, nothing is counted: the clicked ``thread`` is told, and
        the approval stays pending (a click once it is back decides it). When handling the
        click raises (the approved action included), the approval's thread is told and it is
        audited once (:meth:`_report_failure`); this never raises for it, so every adapter
        only posts what comes through ``reply``.
        """
        async with self.inflight():
            approved_here = False  # this click's vote approved the action (and runs it)
            try:
                try:
                    outcome = await self.services.approvals.vote(
                        approval_id, approver, verdict, self.services.policy, reason=reason
                    )
                except Exception as exc:
                    if not unavailable(exc):
                        raise
                    log.error(
                        "approvals.database_unavailable", approval_id=approval_id, error=str(exc)
                    )
                    telemetry.ERRORS.labels("database").inc()
                    await reply(
                        Message(
                            thread=thread,
                            step=Step.ERROR,
                            blocks=[Text(text=wording.vote_not_counted(approval_id, verdict))],
                            approval_id=approval_id,
                            audience=Audience.THREAD if thread else Audience.CLICKER,
                            actor=approver.label,
                        )
                    )
                    return VoteOutcome(VoteStatus.UNKNOWN, None, wording.DATABASE_UNREACHABLE)
                approved_here = outcome.status is VoteStatus.APPROVED
                return await self._decided_vote(
                    approval_id, approver, verdict, reply, outcome, reason, channel
                )
            except Exception as exc:  # the last line of defence of a click
                log.exception("engine.decide_failed", approval_id=approval_id)
                telemetry.ERRORS.labels("internal").inc()
                try:
                    return await self._report_failure(
                        approval_id, reply, exc, approved_here=approved_here, thread=thread
                    )
                except Exception:
                    log.exception("engine.decide_failure_not_reported", approval_id=approval_id)
                    return VoteOutcome(VoteStatus.UNKNOWN, None, wording.click_not_handled(exc))

    async def _report_failure(
        self,
        approval_id: str,
        reply: Reply,
        exc: BaseException,
        *,
        approved_here: bool,
        thread: str = "",
    ) -> VoteOutcome:
        """Handling a click on approval ``approval_id`` raised ``exc``: say so in its thread,
        for everyone, audit it, and, when this click's vote approved the action (it ran, or
        was about to, and never finished), mark it failed so that its card says so instead of
        "running it now". A later click on an action another click approved (and may be
        running) reports its own failure only: that action is not its to mark."""
        approvals = self.services.approvals
        reason = f"{type(exc).__name__}: {exc}"[:300]
        try:
            approval = await approvals.get(approval_id) if approval_id else None
        except Exception as lost:
            if not unavailable(lost):
                raise
            log.error("approvals.database_unavailable", approval_id=approval_id, error=str(lost))
            await reply(
                Message(
                    thread=thread,
                    step=Step.ERROR,
                    blocks=[
                        Text(text=wording.click_failed(approval_id, wording.DATABASE_UNREACHABLE))
                    ],
                    approval_id=approval_id,
                    audience=Audience.THREAD if thread else Audience.CLICKER,
                )
            )
            return VoteOutcome(VoteStatus.UNKNOWN, None, wording.DATABASE_UNREACHABLE)
        if approval is None:
            return VoteOutcome(VoteStatus.UNKNOWN, None, wording.internal_error_in(reason))
        if approved_here and approval.state in (State.APPROVED, State.EXECUTING):
            await approvals.finish(approval.id, ok=False, result=wording.internal_error_in(reason))
            text = wording.approved_action_failed(approval.id, approval.skill, reason)
        else:
            text = wording.click_failed(approval.id, reason)
        await self.services.audit.append(
            AuditEvent.ERROR,
            actor=approval.requester,
            channel=approval.channel,
            thread=approval.thread,
            request_id=approval.request_id,
            skill=approval.skill,
            args=approval.args,
            outcome="error",
            detail=text,
        )
        await reply(
            Message(
                thread=approval.thread,
                step=Step.ERROR,
                blocks=[Text(text=text)],
                approval_id=approval.id,
            )
        )
        done = await approvals.get(approval.id)
        if done is not None and done.state is not State.PENDING:
            await reply(
                Message(
                    thread=done.thread,
                    step=Step.APPROVAL,
                    blocks=[done.card(text)],
                    approval_id=done.id,
                )
            )
        return VoteOutcome(VoteStatus.UNKNOWN, done or approval, text)

    async def _decided_vote(
        self,
        approval_id: str,
        approver: Actor,
        verdict: str,
        reply: Reply,
        outcome: VoteOutcome,
        reason: str,
        channel: str,
    ) -> VoteOutcome:
        approval = outcome.approval
        trail = Trail(
            audit=self.services.audit,
            post=reply,
            actor=approver.id,
            channel=channel or (approval.channel if approval else ""),
            thread=approval.thread if approval else approval_id,
            request_id=approval.request_id if approval else "",
            label=approver.label,
        )
        status = outcome.status
        event = {
            VoteStatus.RECORDED: AuditEvent.APPROVAL_VOTE,
            VoteStatus.APPROVED: AuditEvent.APPROVAL_APPROVED,
            VoteStatus.DENIED: AuditEvent.APPROVAL_DENIED,
            VoteStatus.EXPIRED: AuditEvent.APPROVAL_EXPIRED,
        }.get(status, AuditEvent.APPROVAL_REFUSED)
        telemetry.APPROVALS.labels(status.value).inc()
        if status is VoteStatus.APPROVED:
            text = wording.approved_running(approval_id, approver)
        elif status is VoteStatus.RECORDED:
            text = wording.vote_recorded(approval_id, approver, outcome.message)
        elif status is VoteStatus.DENIED:
            text = wording.denied_by(approval_id, approver, reason)
        else:
            text = wording.vote_refused(verdict, outcome.message)
        counted = status in (VoteStatus.APPROVED, VoteStatus.RECORDED, VoteStatus.DENIED)
        await trail.step(
            Step.APPROVAL if counted else Step.ERROR,
            event,
            text,
            skill=approval.skill if approval else "",
            args=approval.args if approval else {},
            outcome=status.value,
            detail=f"{approval_id} {verdict} {reason}".strip() + f": {outcome.message}",
            audience=Audience.THREAD if counted else Audience.CLICKER,
            approval_id=approval_id,
        )
        if counted and approval is not None:
            await trail.say(Step.APPROVAL, [approval.card(text)], approval_id=approval_id)
        if status is VoteStatus.APPROVED and approval is not None:
            await self._run_approved(approval, trail)
        return outcome

    async def sweep_expired(self, post: Reply) -> list[Approval]:
        """Move pending approvals past their ``ttl`` to ``expired``; audit each and post the
        expiry (and the card, now without buttons) into its own thread through ``post``.

        ``post`` must reach every thread's platform: call this from the one place that routes
        messages by platform (``opsbot serve``; the shell, whose threads are all its own).
        """
        expired = await self.services.approvals.expire_due()
        for approval in expired:
            telemetry.APPROVALS.labels("expired").inc()
            trail = self._approval_trail(approval, post)
            text = wording.expired(approval.id)
            await trail.step(
                Step.APPROVAL,
                AuditEvent.APPROVAL_EXPIRED,
                text,
                skill=approval.skill,
                args=approval.args,
                outcome="expired",
                detail=f"{approval.id} expired at {approval.expires_at.isoformat()} with "
                f"{approval.approvals}/{approval.min_approvals} approvals",
                approval_id=approval.id,
            )
            await trail.say(Step.APPROVAL, [approval.card(text)], approval_id=approval.id)
        return expired

    async def sweep_stale(self, post: Reply) -> list[Approval]:
        """The leader's sweep for actions whose replica stopped: ``executing`` for longer
        than ``OPSBOT_EXECUTION_UNKNOWN_AFTER`` becomes ``unknown`` (it may have run: look
        before asking again), approved but never started becomes ``failed`` (it did not
        run). Neither is run again; each thread is told, and its card shows the state."""
        after = self.services.settings.execution_unknown_after
        moved = await self.services.approvals.stale(after)
        for approval, left in moved:
            trail = self._approval_trail(approval, post)
            if left is State.EXECUTING:
                text, outcome = (
                    wording.outcome_unknown(approval.id, approval.skill, after),
                    "unknown",
                )
            else:
                text, outcome = wording.not_started(approval.id), "not-run"
            await trail.step(
                Step.ERROR,
                AuditEvent.RESULT,
                text,
                skill=approval.skill,
                args=approval.args,
                outcome=outcome,
                detail=f"{approval.id}: {approval.result}",
                approval_id=approval.id,
            )
            await trail.say(Step.APPROVAL, [approval.card(text)], approval_id=approval.id)
        return [approval for approval, _ in moved]

    async def run_follow_ups(
        self, post: Reply, *, stale_after: float, poll: float = 1.0, limit: int = 20
    ) -> None:
        """The leader's loop over :attr:`follow_ups`: take those nobody runs (new ones, and
        those whose runner stopped heartbeating for ``stale_after`` seconds), run each (up to
        ``limit`` at once) and report it in its thread. Until cancelled; the ones running then
        are handed back, for the next leader to take at once."""
        queue = self.follow_ups
        if queue is None:
            return
        running: dict[str, asyncio.Task[None]] = {}
        # a claim saves ``running`` before it returns what it took: a stop landing in between
        # must not strand those (nobody would follow them until they went stale), so the claim
        # is shielded and, when stopped, what it took is handed back with the rest
        claiming: asyncio.Task[list[FollowUp]] | None = None
        try:
            while True:
                if len(running) < limit:
                    claiming = asyncio.create_task(
                        queue.claim(
                            self.identity, stale_after=stale_after, limit=limit - len(running)
                        )
                    )
                    try:
                        claimed = await asyncio.shield(claiming)
                    except Exception as exc:
                        log.warning("follow_ups.claim_failed", error=str(exc)[:200])
                        claimed = []
                    claiming = None
                    for follow_up in claimed:
                        task = asyncio.create_task(
                            self._follow_one(queue, follow_up, post, max(0.5, stale_after / 3)),
                            name=f"follow-up:{follow_up.id}",
                        )
                        running[follow_up.id] = task
                        task.add_done_callback(partial(_forget, running, follow_up.id))
                await asyncio.sleep(poll)
        finally:
            # stopping again while this cleans up must not skip it: the running ones are
            # cancelled first, and the claim's wait and the hand-backs go on in a task of
            # their own that a second stop does not cancel
            ours, tasks = list(running), list(running.values())
            for task in tasks:
                task.cancel()
            stopped_again: BaseException | None = None
            try:
                await asyncio.gather(*tasks, return_exceptions=True)
            except BaseException as exc:  # cancelled again: they are cancelled already
                stopped_again = exc
            handing = asyncio.create_task(self._hand_back(queue, ours, claiming))
            _HANDING_BACK.add(handing)
            handing.add_done_callback(_HANDING_BACK.discard)
            try:
                await asyncio.shield(handing)
            except BaseException as exc:  # cancelled again: the hand-backs go on
                stopped_again = exc
            if stopped_again is not None:
                raise stopped_again

    async def _hand_back(
        self,
        queue: FollowUps,
        ours: list[str],
        claiming: asyncio.Task[list[FollowUp]] | None,
    ) -> None:
        """Hand back the follow-ups ``ours`` and, when the loop stopped while claiming, what
        that claim took (once it returns), for the next leader to take at once."""
        if claiming is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                ours = [*ours, *(follow_up.id for follow_up in await claiming)]
        for follow_up_id in ours:  # also those cancelled before they started
            with contextlib.suppress(Exception):
                await queue.hand_back(follow_up_id, self.identity)

    async def _follow_one(
        self, queue: FollowUps, follow_up: FollowUp, post: Reply, heartbeat: float
    ) -> None:
        skill = self.services.registry.get(follow_up.skill)
        request = Request(
            actor=follow_up.actor,
            channel=follow_up.channel,
            text="",
            thread=follow_up.thread,
            id=follow_up.request_id,
        )
        trail = Trail(
            audit=self.services.audit,
            post=post,
            actor=follow_up.actor.id,
            channel=follow_up.channel,
            thread=follow_up.thread,
            request_id=follow_up.request_id,
            label=follow_up.actor.label,
        )

        async def beat() -> None:
            while True:
                await asyncio.sleep(heartbeat)
                with contextlib.suppress(Exception):
                    if not await queue.beat(follow_up.id, self.identity):
                        log.warning("follow_ups.taken_over", follow_up=follow_up.id)
                        return

        async with self.inflight():
            beating = asyncio.create_task(beat())
            try:
                left = (follow_up.deadline - now()).total_seconds()
                if skill is None or left <= 0:
                    text = wording.follow_up_interrupted(follow_up.skill)
                    # saved before the thread is told: whoever reads it then finds it ended
                    await queue.end(
                        follow_up.id,
                        self.identity,
                        state=FollowUpState.INTERRUPTED,
                        result=text,
                    )
                    await trail.step(
                        Step.ERROR,
                        AuditEvent.FOLLOW_UP,
                        text,
                        skill=follow_up.skill,
                        args=follow_up.args,
                        outcome="interrupted",
                        detail=text,
                    )
                    return
                if follow_up.resumed:
                    await trail.say(Step.RESULT, wording.follow_up_resumed(follow_up.skill))
                try:
                    args = skill.parse_args(follow_up.args)
                    result = await asyncio.wait_for(
                        skill.follow_up(args, self.context(skill, request)), left
                    )
                except (SkillError, TimeoutError, ValidationError) as exc:
                    args = None
                    result = SkillResult(
                        ok=False, summary=f"could not follow up: {exc or 'timed out'}"
                    )
                await queue.end(  # saved before the thread is told, as above
                    follow_up.id,
                    self.identity,
                    state=FollowUpState.DONE,
                    result=result.summary if result is not None else "",
                )
                await self._report_follow_up(skill, args, trail, result, raw=follow_up.args)
            except asyncio.CancelledError:
                with contextlib.suppress(Exception):  # the next leader takes it at once
                    await asyncio.shield(queue.hand_back(follow_up.id, self.identity))
                raise
            except Exception:
                log.exception("follow_ups.failed", follow_up=follow_up.id)
            finally:
                beating.cancel()

    async def _run_approved(self, approval: Approval, trail: Trail) -> None:
        skill = self.services.registry.get(approval.skill)
        requester = Actor(id=approval.requester)
        request = Request(
            actor=requester,
            channel=approval.channel,
            text="",
            thread=approval.thread,
            id=approval.request_id,
        )
        runner = trail.by(approval.requester)
        args: Any = None
        if not await self.services.approvals.start(approval.id, self.identity):
            # the sweep gave it up (this replica was too slow to start it): it never ran
            await trail.say(Step.ERROR, wording.not_started(approval.id))
            return
        if skill is None:
            result = SkillResult(ok=False, summary=f"skill {approval.skill} is no longer installed")
        else:
            try:
                args = skill.parse_args(approval.args)
            except ValidationError as exc:
                result = SkillResult(
                    ok=False,
                    summary=f"stored arguments no longer valid: {wording.validation_problems(exc)}",
                )
            else:
                result = await self.execute(skill, args, self.context(skill, request), runner)
        await self.services.approvals.finish(approval.id, ok=result.ok, result=result.summary)
        await self._post_result(trail, approval.skill, result, approval_id=approval.id)
        done = await self.services.approvals.get(approval.id)
        if done is not None:
            await trail.say(Step.APPROVAL, [done.card()], approval_id=approval.id)
        if result.ok and skill is not None and args is not None:
            await self._follow_up(
                skill, args, self.context(skill, request), runner, approval_id=approval.id
            )

    async def _follow_up(
        self,
        skill: Skill[Any, Any],
        args: Any,
        ctx: SkillContext[Any],
        trail: Trail,
        *,
        approval_id: str = "",
    ) -> None:
        """Report what happened after a write (e.g. the rollout), bounded by the rollout
        timeout: here and now, or, with :attr:`follow_ups`, kept for the leader to run."""
        limit = self.services.settings.rollout_timeout + self._skill_timeout()
        if self.follow_ups is not None:
            if type(skill).follow_up is Skill.follow_up:
                return  # nothing to follow
            await self.follow_ups.add(
                skill=skill.name,
                args=_dump(args),
                actor=ctx.actor,
                channel=trail.channel,
                thread=trail.thread,
                request_id=trail.request_id,
                approval_id=approval_id,
                within=limit,
            )
            return
        try:
            result = await asyncio.wait_for(skill.follow_up(args, ctx), limit)
        except (SkillError, TimeoutError) as exc:
            result = SkillResult(ok=False, summary=f"could not follow up: {exc or 'timed out'}")
        await self._report_follow_up(skill, args, trail, result)

    async def _report_follow_up(
        self,
        skill: Skill[Any, Any],
        args: Any,
        trail: Trail,
        result: SkillResult | None,
        *,
        raw: dict[str, Any] | None = None,
    ) -> None:
        if result is None:
            return
        await trail.record(
            AuditEvent.FOLLOW_UP,
            skill=skill.name,
            args=_dump(args) if args is not None else dict(raw or {}),
            outcome="ok" if result.ok else "failed",
            detail=result.summary,
        )
        await self._post_result(trail, skill.name, result)

    async def _error(
        self,
        trail: Trail,
        text: str,
        *,
        skill: str = "",
        args: dict[str, Any] | None = None,
    ) -> None:
        telemetry.ERRORS.labels("request").inc()
        await trail.step(
            Step.ERROR, AuditEvent.ERROR, text, skill=skill, args=args, outcome="error", detail=text
        )
