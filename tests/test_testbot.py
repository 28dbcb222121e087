"""The ``opsbot_bot`` fixture (opsbot.testing) a skill author tests with: ask, approval card,
clicks as given identities, suggested-action buttons; and the plugin under other pytest
set-ups (pytest-asyncio strict, no async plugin at all)."""

from __future__ import annotations

import textwrap
from typing import ClassVar

import pytest
from pydantic import BaseModel

from opsbot.approvals import State, VoteStatus
from opsbot.audit import AuditEvent
from opsbot.model import ActionButton, Invocation, SkillResult, Step, Text
from opsbot.policy import BUNDLED_POLICIES
from opsbot.skills.base import Risk, Skill, SkillContext
from opsbot.testing import TestBot

pytest_plugins = ["pytester"]

POLICY = """
groups:
  sre: [shell:alice]
  oncall: [shell:bob, shell:carol]
rules:
  - name: everyone reads
    subjects: ["*"]
    skills: [help, toy.status, toy.ping]
    effect: allow
  - name: restarts need one on-call approval
    subjects: [group:sre, group:oncall]
    skills: [toy.restart]
    namespaces: [shop]
    effect: approve
    approvers: [group:oncall]
"""


class Target(BaseModel):
    name: str
    namespace: str = "shop"


class ToyRestart(Skill[Target]):
    name = "toy.restart"
    summary = "Restart a toy service"
    Args = Target
    risk = Risk.WRITE
    keywords: ClassVar[dict[str, float]] = {"restart": 3.0}
    runs: ClassVar[list[str]] = []

    async def preview(self, args: Target, ctx: SkillContext) -> str:
        return f"would restart {args.name} in {args.namespace}"

    async def run(self, args: Target, ctx: SkillContext) -> SkillResult:
        ToyRestart.runs.append(f"{ctx.actor.id}:{args.name}")
        return SkillResult(summary=f"restarted {args.name}")


class ToyPing(Skill[Target]):
    name = "toy.ping"
    summary = "Ping a toy service"
    Args = Target
    keywords: ClassVar[dict[str, float]] = {"ping": 3.0}
    runs: ClassVar[list[str]] = []

    async def run(self, args: Target, ctx: SkillContext) -> SkillResult:
        ToyPing.runs.append(f"{ctx.actor.id}:{args.name}")
        return SkillResult(summary=f"{args.name} answers")


class ToyStatus(Skill[Target]):
    """A read that suggests two follow-ups as buttons (as an incident triage would)."""

    name = "toy.status"
    summary = "Status of a toy service"
    Args = Target
    keywords: ClassVar[dict[str, float]] = {"status": 3.0}

    async def run(self, args: Target, ctx: SkillContext) -> SkillResult:
        target = {"name": args.name, "namespace": args.namespace}
        return SkillResult(
            summary=f"{args.name} is degraded",
            blocks=[
                Text(text=f"**{args.name}** answers slowly."),
                ActionButton(
                    id=f"restart-{args.name}",
                    label=f"Restart {args.name}",
                    invocation=Invocation(skill="toy.restart", args=target),
                ),
                ActionButton(
                    id=f"ping-{args.name}",
                    label=f"Ping {args.name}",
                    invocation=Invocation(skill="toy.ping", args=target),
                ),
            ],
        )


@pytest.fixture
def bot(opsbot_bot: TestBot) -> TestBot:
    ToyRestart.runs, ToyPing.runs = [], []
    opsbot_bot.use_policy(POLICY)
    for skill in (ToyRestart(), ToyPing(), ToyStatus()):
        opsbot_bot.add_skill(skill)
    return opsbot_bot


async def test_approval_card_requester_refused_approver_runs_once(bot: TestBot) -> None:
    asked = await bot.ask("restart web in shop", as_="shell:alice")
    assert "would restart web in shop" in asked.text
    assert "Needs approval by 1 of group:oncall" in asked.text
    [approval_id] = asked.approvals
    assert bot.approvals == [approval_id]
    card = asked.card(approval_id)
    assert card.open and card.requester == "shell:alice" and card.summary.startswith("toy.restart")

    refused = await bot.click(approval_id, as_="shell:alice")
    assert refused.outcome is not None and refused.outcome.status is VoteStatus.SELF
    assert "someone else must approve" in refused.text
    assert [m.audience.value for m in refused] == ["clicker"]
    assert ToyRestart.runs == []

    approved = await bot.click(approval_id, as_="shell:bob")
    assert approved.outcome is not None and approved.outcome.status is VoteStatus.APPROVED
    assert ToyRestart.runs == ["shell:alice:web"]  # runs once, as the requester
    assert "restarted web" in approved.text
    assert approved.card(approval_id).state == "executed"

    again = await bot.click(approval_id, as_="shell:carol")
    assert again.outcome is not None and again.outcome.status is VoteStatus.DECIDED
    assert ToyRestart.runs == ["shell:alice:web"]
    stored = await bot.services.approvals.get(approval_id)
    assert stored is not None and stored.state is State.EXECUTED
    # the whole thread, as a chat shows it: request, card, refusal, approval, result
    assert bot.thread[0].step is Step.PLAN and "restarted web" in bot.thread.text


async def test_deny_by_card_block(bot: TestBot) -> None:
    asked = await bot.ask("restart web in shop")
    denied = await bot.click(asked.cards[0], as_="shell:carol", verdict="deny", reason="not now")
    assert denied.outcome is not None and denied.outcome.status is VoteStatus.DENIED
    assert "not now" in denied.text and ToyRestart.runs == []


async def test_a_suggested_action_runs_as_the_clicker_through_policy(bot: TestBot) -> None:
    status = await bot.ask("status of web in shop", as_="shell:alice")
    assert [a.label for a in status.actions] == ["Restart web", "Ping web"]
    assert [a.id for a in bot.actions] == ["restart-web", "ping-web"]

    # eve may read but not restart: the click is her request, refused by policy
    refused = await bot.click("restart-web", as_="shell:eve")
    assert "Refused: toy.restart is not available to shell:eve here." in refused.text
    assert not refused.approvals and ToyRestart.runs == []

    # bob may, with an approval: the card names him as the requester, in alice's thread
    offered = await bot.click(status.actions[0], as_="shell:bob")
    [approval_id] = offered.approvals
    assert offered.card(approval_id).requester == "shell:bob"
    assert {m.thread for m in offered} == {status[0].thread}
    self_vote = await bot.click(approval_id, as_="shell:bob")
    assert self_vote.outcome is not None and self_vote.outcome.status is VoteStatus.SELF
    await bot.click(approval_id, as_="shell:carol")
    assert ToyRestart.runs == ["shell:bob:web"]

    # a read button runs straight away, as whoever clicked it
    pinged = await bot.click("ping-web", as_="shell:eve")
    assert "web answers" in pinged.text and ToyPing.runs == ["shell:eve:web"]
    [ran] = await bot.services.audit.search(event=AuditEvent.RESULT, skill="toy.ping")
    assert ran.actor == "shell:eve"


async def test_unknown_ids_are_refused_to_the_clicker(bot: TestBot) -> None:
    await bot.ask("status of web in shop")
    unknown = await bot.click("zzzzzz", as_="shell:bob")
    assert unknown.outcome is not None and unknown.outcome.status is VoteStatus.UNKNOWN
    assert "no approval request with id zzzzzz" in unknown.text


async def test_the_bundled_policy_is_the_default(opsbot_bot: TestBot) -> None:
    reply = await opsbot_bot.ask("help", as_="shell:alice")
    assert "Skills you (shell:alice) may use here" in reply.text
    assert "audit.search" in reply.text
    assert opsbot_bot.services.policy.sources == [str(BUNDLED_POLICIES / "default.yaml")]


@pytest.mark.opsbot(policy=POLICY, skills=[ToyPing()])
async def test_the_marker_configures_the_fixture(opsbot_bot: TestBot) -> None:
    ToyPing.runs = []
    reply = await opsbot_bot.ask("ping api", as_="shell:eve")
    assert "api answers" in reply.text and ToyPing.runs == ["shell:eve:api"]


async def test_a_bad_policy_or_a_taken_skill_name_fails_loudly(opsbot_bot: TestBot) -> None:
    from opsbot.policy import PolicyError

    opsbot_bot.use_policy(
        "rules:\n  - name: x\n    subjects: ['*']\n    skills: [help]\n    efect: allow\n"
    )
    with pytest.raises(PolicyError, match=r"policy\.yaml:5: rules\.0\.efect: unknown key"):
        await opsbot_bot.start()
    opsbot_bot.use_policy(POLICY)
    await opsbot_bot.start()
    with pytest.raises(ValueError, match="already loaded: help"):
        opsbot_bot.add_skill(type("Help2", (ToyPing,), {"name": "help"})())


PLUGIN_TEST = textwrap.dedent(
    '''
    from typing import ClassVar

    import pytest
    from pydantic import BaseModel

    from opsbot.model import SkillResult
    from opsbot.skills.base import Skill

    POLICY = """
    rules:
      - name: reads
        subjects: ["*"]
        skills: [demo.hello]
        effect: allow
    """

    class Nothing(BaseModel):
        pass

    class Hello(Skill[Nothing]):
        name = "demo.hello"
        summary = "Say hello"
        Args = Nothing
        keywords: ClassVar[dict[str, float]] = {"hello": 3.0}

        async def run(self, args, ctx):
            return SkillResult(summary=f"hello {ctx.actor.id}")

    {body}
    '''
)

ASYNC_BODY = """
@pytest.mark.opsbot(policy=POLICY, skills=[Hello()])
@pytest.mark.asyncio
async def test_hello(opsbot_bot):
    reply = await opsbot_bot.ask("hello", as_="shell:zoe")
    assert "hello shell:zoe" in reply.text
"""

SYNC_BODY = """
@pytest.mark.opsbot(policy=POLICY, skills=[Hello()])
def test_hello(opsbot_bot):
    reply = opsbot_bot.ask_sync("hello", as_="shell:zoe")
    assert "hello shell:zoe" in reply.text
    assert opsbot_bot.ask_sync("hello").text.count("hello shell:alice") == 1
"""


@pytest.mark.parametrize(
    ("body", "options"),
    [
        pytest.param(
            ASYNC_BODY,
            ["-o", "asyncio_mode=strict", "-o", "asyncio_default_fixture_loop_scope=function"],
            id="pytest-asyncio-strict",
        ),
        pytest.param(SYNC_BODY, ["-p", "no:asyncio"], id="without-pytest-asyncio"),
    ],
)
def test_the_plugin_is_registered_and_works_under_other_setups(
    pytester: pytest.Pytester, body: str, options: list[str]
) -> None:
    """A skill author's project: the fixture comes from the installed entry point. The
    project has its own (empty) pytest configuration, so no pyproject.toml above the
    temporary folder (e.g. a stray /tmp/pyproject.toml) decides its settings."""
    pytester.makeini("[pytest]\n")
    pytester.makepyfile(test_hello=PLUGIN_TEST.replace("{body}", textwrap.dedent(body)))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "-W", "error", *options)
    result.assert_outcomes(passed=1)
    assert "warning" not in result.stdout.str().lower()
