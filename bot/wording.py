"""Every sentence opsbot says about a request's steps, in one place (neutral markup, see
:class:`opsbot.model.Text`). The engine, planners and adapters call these; none of them builds
user-facing sentences of its own."""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import ValidationError

from opsbot.model import Actor, Invocation, SkillResult, Text
from opsbot.redact import redact_value

NOTHING_FITS = (
    "I'm not sure what you need. Try `help` for what I can do here, e.g. "
    "`show firing alerts` or `health of checkout`."
)
EMPTY = "Say what you need, or type `help`."


def describe(invocation: Invocation) -> str:
    """``skill key=value ...`` with secrets redacted: how an invocation is shown anywhere."""
    args = " ".join(f"{k}={v}" for k, v in redact_value(invocation.args).items())
    return f"{invocation.skill} {args}".strip()


def validation_problems(exc: ValidationError, limit: int = 500) -> str:
    """A pydantic error as one line: ``field: message; field: message``."""
    text = "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'args'}: {e['msg']}" for e in exc.errors()
    )
    return text[:limit]


def missing_fields(exc: ValidationError) -> list[str]:
    """The required fields a validation error says are missing."""
    return [str(e["loc"][0]) for e in exc.errors() if e["type"] == "missing" and e["loc"]]


def plan(invocation: Invocation, planner: str) -> str:
    why = f" — {invocation.rationale}" if invocation.rationale else ""
    return f"Plan ({planner}): `{describe(invocation)}`{why}"


def allowed(rule: str) -> str:
    return f"Allowed by rule **{rule}**."


def denied(reason: str) -> str:
    return f"Denied: {reason}."


def needs_approval(min_approvals: int, approvers: Sequence[str], rule: str) -> str:
    return f"Needs approval by {min_approvals} of {', '.join(approvers)} (rule **{rule}**)."


def unknown_skill(skill: str) -> str:
    return f"Refused: unknown skill {skill!r}."


def not_available(skill: str, actor: Actor) -> str:
    return f"Refused: {skill} is not available to {actor.id} here."


def withheld(skill: str, actor: Actor) -> str:
    """Why nothing ran when the request fits a skill the policy does not give this actor."""
    return f"no policy rule allows {actor.id} to call {skill} here"


def invalid_args(skill: str, exc: ValidationError) -> str:
    return f"Invalid arguments for {skill}: {validation_problems(exc)}"


def not_submitted(reason: str) -> str:
    return f"Not submitted for approval: {reason}"


def planner_failed(exc: Exception) -> str:
    return f"I could not understand that ({type(exc).__name__})."


def internal_error(exc: Exception) -> str:
    return f"Internal error ({type(exc).__name__}); it is logged."


def busy(waiting: int) -> str:
    return (
        f"I am busy right now ({waiting} requests are waiting before yours), so I did not take "
        "this one and nothing was run. Please ask again in a minute."
    )


def database_down() -> str:
    return (
        "I cannot reach my database right now, so nothing was recorded and nothing was run. "
        "Try again in a minute; the people who run me can see it in my logs."
    )


def vote_not_counted(approval_id: str, verdict: str) -> str:
    return (
        f"Your {verdict} of `{approval_id}` was not counted: I cannot reach my database right "
        "now. The request stays pending; click again in a minute."
    )


#: why a click got no outcome (:class:`~opsbot.approvals.VoteOutcome`'s message)
DATABASE_UNREACHABLE = "the database is unreachable"


def internal_error_in(reason: str) -> str:
    """What a click that failed got, and the result kept on an approved action it stopped."""
    return f"internal error ({reason})"


def click_not_handled(exc: Exception) -> str:
    """A click whose failure could not even be reported (the last line of defence)."""
    return f"internal error: {exc}"[:300]


def approved_action_failed(approval_id: str, skill: str, reason: str) -> str:
    return (
        f"Approval `{approval_id}`: running `{skill}` failed with an internal "
        f"error ({reason}); it did not finish. The audit log has the details."
    )


def click_failed(approval_id: str, reason: str) -> str:
    return f"Approval `{approval_id}`: an internal error ({reason}) stopped this click."


def not_started(approval_id: str) -> str:
    return (
        f"Approval `{approval_id}`: the action did not run (the replica that was to run it "
        "stopped first). Nothing was changed; ask again if it is still needed."
    )


def outcome_unknown(approval_id: str, skill: str, seconds: float) -> str:
    return (
        f"Approval `{approval_id}`: the replica running `{skill}` stopped, and no outcome came "
        f"within {seconds:g}s. It may or may not have run: check the target's state before "
        "asking again. It will not be run again by itself."
    )


def follow_up_resumed(skill: str) -> str:
    return f"Following `{skill}` again (the replica that was following it stopped)."


def follow_up_interrupted(skill: str) -> str:
    return (
        f"The follow-up of `{skill}` was interrupted (the replica following it stopped) and its "
        "time ran out: nothing is watching it now. The write itself ran once and is not repeated."
    )


def result_head(skill: str, result: SkillResult) -> Text:
    return Text(
        text=f"`{skill}`: {result.summary}" if result.ok else f"`{skill}` failed: {result.summary}"
    )


def timed_out(skill: str, seconds: float) -> str:
    return f"{skill} did not finish within {seconds:g}s; abandoned."


def crashed(skill: str, exc: Exception) -> str:
    return f"{skill} failed unexpectedly ({type(exc).__name__}: {exc})"


def approved_running(approval_id: str, approver: Actor) -> str:
    return f"Approval `{approval_id}` approved by {approver.label}; running it now."


def vote_recorded(approval_id: str, approver: Actor, progress: str) -> str:
    return f"{approver.label} approved `{approval_id}`: {progress}."


def denied_by(approval_id: str, approver: Actor, reason: str) -> str:
    return f"Approval `{approval_id}` denied by {approver.label}" + (
        f": {reason}" if reason else "."
    )


def vote_refused(verdict: str, message: str) -> str:
    return f"Not {verdict}d: {message}."


def expired(approval_id: str) -> str:
    return f"Approval `{approval_id}` expired without enough approvals; nothing was run."


def unknown_action(action_id: str) -> str:
    return f"That suggested action ({action_id}) is no longer known; ask again."


def about_write(about: Invocation | str) -> str:
    """The answer to a question about a write: nothing is planned, and how to ask for it."""
    what = f"`{describe(about)}`" if isinstance(about, Invocation) else f"`{about}`"
    return (
        f"You asked about {what}; I plan a write only when asked to do it, so nothing was "
        "planned. To do it, say it as a request (e.g. `restart checkout in shop`); it will "
        "still need approval."
    )
