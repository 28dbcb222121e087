"""The offline router: accuracy on the routing sets, argument extraction, grounding, and
what it must never do (invent skills outside the catalog, guess on chit-chat)."""

from __future__ import annotations

from pathlib import Path

import pytest

from opsbot.evaluation import evaluate, load_cases
from opsbot.grounding import ground
from opsbot.intent import extract as ex
from opsbot.intent import speech
from opsbot.intent.offline import OfflineRouter
from opsbot.inventory import Inventory
from opsbot.model import Actor, Answer, Clarify, Plan, Request, Run, first_invocation
from opsbot.skills.base import load_registry

ROOT = Path(__file__).resolve().parent.parent
DEV = ROOT / "eval" / "routing-dev.yaml"
REGISTRY = load_registry()


def skill_of(plan: Plan) -> str | None:
    invocation = first_invocation(plan)
    return invocation.skill if invocation else None


def request(text: str) -> Request:
    return Request(actor=Actor(id="shell:alice"), channel="test", text=text)


@pytest.mark.parametrize("dataset", [DEV, ROOT / "eval" / "routing-extra.yaml"])
async def test_accuracy_on_installed_skills(dataset: Path) -> None:
    report = await evaluate(load_cases(dataset), OfflineRouter(), REGISTRY)
    misses = [(r.case.text, r.reason) for r in report.installed if not r.ok]
    assert report.installed_accuracy >= 0.95, misses
    # a case whose skill is not installed is a miss, and says so
    for r in report.results:
        if not r.installed:
            assert not r.ok and r.reason.endswith("is not installed")


WRITES = {s.name for s in REGISTRY if s.risk.value != "read"} | {"alerts.unsilence"}


async def test_no_write_is_planned_that_the_request_did_not_ask_for() -> None:
    """Issue 10, defect: 12 of 12 negations, questions and removals planned a write (the
    router scored "restart" in "don't restart checkout", "should we roll back", "did anyone
    restart"). Over the adversarial set a write is planned only where the case expects that
    very write, and the cases on installed skills all pass but one read (see eval/results.md)."""
    report = await evaluate(
        load_cases(ROOT / "eval" / "routing-adversarial.yaml"), OfflineRouter(), REGISTRY
    )
    unasked = [
        (r.case.text, r.skill)
        for r in report.results
        if r.skill in WRITES and r.skill != r.case.expect.skill
    ]
    assert unasked == []
    assert report.installed_accuracy >= 0.97, [r.reason for r in report.installed if not r.ok]


@pytest.mark.parametrize(
    ("text", "mood"),
    [
        ("restart checkout in shop", "imperative"),
        ("please do a rolling restart of payments in shop", "imperative"),
        ("kubectl rollout undo deployment/cart -n shop", "imperative"),
        ("no, not checkout: restart payments in shop", "imperative"),
        ("don't restart checkout in shop, just check its pods", "negated"),
        ("should we roll back checkout in shop?", "question"),
        ("did anyone restart checkout today?", "report"),
        ("fyi we rolled back payments an hour ago", "report"),
        ("if it gets worse we might need to roll it back", "hypothetical"),
        ('the runbook says "restart checkout", still right?', "quoted"),
        ("restart count of the checkout pods", "noun"),
        ("[FIRING:1] KubePodCrashLooping: restart the deployment if it stays stuck", "quoted"),
        ("checkout to 5 replicas in shop", "imperative"),
        ("do it", "none"),
    ],
)
def test_write_mood(text: str, mood: str) -> None:
    assert speech.write_mood(text).value == mood


async def test_a_question_about_a_write_is_answered_with_what_it_would_do() -> None:
    plan = await OfflineRouter().plan(
        request("should we roll back checkout in shop?"), list(REGISTRY)
    )
    assert isinstance(plan, Answer) and plan.about is not None
    assert plan.about.skill == "k8s.rollback" and plan.about.args["name"] == "checkout"
    assert "nothing was planned" in plan.text


@pytest.mark.parametrize(
    ("text", "expr", "kind", "rest"),
    [
        (
            "promql: sum(rate(x[5m])) by (service)",
            "sum(rate(x[5m])) by (service)",
            "promql",
            "promql",
        ),
        ('logql: {app="a"} |= "error"', '{app="a"} |= "error"', "logql", "logql"),
        ("graph rate(x[5m]) over the last 6h", "rate(x[5m])", "promql", "graph over the last 6h"),
        ("plot node_load1 for the past hour", "node_load1", "promql", "plot for the past hour"),
        ("run the query `up == 0` please", "up == 0", "promql", "run the query please"),
        (
            'search logs {ns="shop"} |= "timeout" since 15m',
            '{ns="shop"} |= "timeout"',
            "logql",
            "search logs since 15m",
        ),
        (
            "what is rate(http_requests_total[1m]) for checkout",
            "rate(http_requests_total[1m])",
            "promql",
            "what is for checkout",
        ),
    ],
)
def test_expression_extraction(text: str, expr: str, kind: str, rest: str) -> None:
    parsed = ex.parse(text)
    assert (parsed.expr, parsed.expr_kind, parsed.rest) == (expr, kind, rest)


def test_plain_english_is_not_an_expression() -> None:
    assert ex.parse("show me a graph of error rate for checkout").expr is None
    assert ex.parse("restart checkout in shop").expr is None


@pytest.mark.parametrize(
    ("text", "since", "duration"),
    [
        ("in the last 30m", "30m", "30m"),
        ("over the past hour", "1h", "1h"),
        ("silence X for 2h, deploy", None, "2h"),
        ("last 24 hours", "24h", "24h"),
        ("since 90 minutes", "90m", "90m"),
        ("for half an hour", None, "30m"),
    ],
)
def test_durations(text: str, since: str | None, duration: str) -> None:
    parsed = ex.parse(text)
    assert ex.extract_since(parsed) == since
    assert ex.extract_for_duration(parsed) == duration


def test_namespace_forms() -> None:
    for text in (
        "pods -n shop",
        "pods --namespace shop",
        "pods in namespace shop",
        "pods in shop",
        "shop namespace pods",
        "ns: shop pods",
    ):
        assert ex.extract_namespace(ex.parse(text)) == "shop", text
    assert ex.extract_namespace(ex.parse("errors in the last hour")) is None
    assert ex.extract_namespace(ex.parse("in prod"), known={"shop"}) is None


def test_matchers() -> None:
    assert ex.extract_matchers(ex.parse('alerts with team="payments" severity=critical')) == {
        "team": "payments",
        "severity": "critical",
    }
    assert ex.extract_matchers(ex.parse("silence HighErrorRate for service checkout")) == {
        "service": "checkout",
        "alertname": "HighErrorRate",
    }


async def test_chit_chat_and_unknown_requests_map_to_no_skill() -> None:
    router = OfflineRouter()
    for text in ("tell me a joke", "what's the weather in Paris", "thanks!", "", "?!"):
        plan = await router.plan(request(text), list(REGISTRY))
        assert isinstance(plan, Answer), text
    thanks = await router.plan(request("thanks!"), list(REGISTRY))
    assert isinstance(thanks, Answer) and "welcome" in thanks.text


async def test_only_catalog_skills_are_ever_planned() -> None:
    """A skill the actor may not call is invisible to the router, even on a perfect match."""
    router = OfflineRouter()
    reads = [s for s in REGISTRY if s.name != "alerts.silence"]
    plan = await router.plan(request("silence HighErrorRate for 2h"), reads)
    assert skill_of(plan) != "alerts.silence"


async def test_missing_required_argument_asks() -> None:
    plan = await OfflineRouter().plan(request("graph over the last hour"), list(REGISTRY))
    assert isinstance(plan, Clarify) and "`query`" in plan.question


async def test_names_are_grounded_against_the_inventory() -> None:
    inventory = Inventory()
    inventory.add("service", ["checkout", "payments", "cart"])
    inventory.add("namespace", ["shop", "staging"])
    router = OfflineRouter(inventory)
    plan = await router.plan(request("how is paymnts doing in shop"), list(REGISTRY))
    assert isinstance(plan, Run) and plan.invocations[0].args == {
        "service": "payments",
        "namespace": "shop",
    }
    assert ground("chekout", ["checkout", "payments"]).value == "checkout"
    assert ground("zzz", ["checkout"]).value is None
    ambiguous = ground("cart", ["cart-api", "cart-web"])
    assert ambiguous.value is None and set(ambiguous.candidates) == {"cart-api", "cart-web"}


async def test_huge_messages_are_bounded() -> None:
    plan = await OfflineRouter().plan(
        request("show firing alerts " + "x " * 50_000), list(REGISTRY)
    )
    assert skill_of(plan) == "alerts.list"


# -- issue 12: everyday phrasing, bad input, ambiguity, speed ----------------------------------


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        (
            "bounce the orders pods in billing",
            "k8s.restart",
            {"name": "orders", "namespace": "billing"},
        ),
        ("cycle orders in billing", "k8s.restart", {"name": "orders"}),
        ("give orders a kick in billing", "k8s.restart", {"name": "orders"}),
        ("take orders in billing down to zero", "k8s.scale", {"name": "orders", "replicas": 0}),
        ("scale orders out to six in billing", "k8s.scale", {"replicas": 6}),
        ("is orders ok?", "service.health", {"service": "orders"}),
        ("RED metrics for orders", "service.health", {"service": "orders"}),
        (
            "how's orders looking in billing",
            "service.health",
            {"service": "orders", "namespace": "billing"},
        ),
        (
            "silence alerts for orders for 1h",
            "alerts.silence",
            {"matchers": {"service": "orders"}, "duration": "1h"},
        ),
        (
            "run promql sum(rate(http_requests_total[5m])) by (code)",
            "prometheus.query",
            {"query": "sum(rate(http_requests_total[5m])) by (code)"},
        ),
        ("graph of up over the last 30m", "prometheus.range", {"query": "up", "since": "30m"}),
        ("chart node_load1 for 3h", "prometheus.range", {"query": "node_load1", "since": "3h"}),
        (
            "show me the last 50 lines from orders in billing",
            "k8s.logs",
            {"name": "orders", "namespace": "billing", "tail": 50},
        ),
    ],
)
async def test_everyday_phrasing(text: str, skill: str, args: dict[str, object]) -> None:
    invocation = first_invocation(await OfflineRouter().plan(request(text), list(REGISTRY)))
    assert invocation is not None and invocation.skill == skill, text
    assert {k: invocation.args.get(k) for k in args} == args, invocation.args


def test_the_lexicon_maps_synonyms_in_place_and_idioms_after() -> None:
    assert ex.parse("lift the mute on cart").canon[:3] == ["lift", "the", "silenc"]
    assert ex.parse("take cart down to zero").canon[-2:] == ["|", "scal"]
    assert ex.parse("is cart ok").canon[-1] == "health"
    # a synonym of a write is a write word to speech too: the mood still decides
    assert speech.write_mood("did anyone bounce cart?").value == "report"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "Say what you need"),
        ("   \n\t ", "Say what you need"),
        ("🔥🔥🔥 😱", "written in words"),
        ("¯\\_(ツ)_/¯ ?!", "written in words"),
        ("\x00\x01\x02ELF\x7f\x00\x00binary", "binary"),
        ("H4sIAAAAAAAAA" + "x7vR2Yq" * 40, "binary"),
        ("Почему checkout так медленно работает?", "English only"),
        ("为什么结账服务很慢", "English only"),
        ("¿Por qué está tan lento el servicio de pagos?", "English only"),
        ("Warum ist der Dienst so langsam und was ist los?", "English only"),
        ("lorem " * 2000, "characters long"),
    ],
)
async def test_bad_input_is_answered_briefly(text: str, says: str) -> None:
    plan = await OfflineRouter().plan(request(text), list(REGISTRY))
    assert isinstance(plan, Answer) and says in plan.text, plan
    assert plan.about is None and len(plan.text) < 300


async def test_a_long_request_is_read_from_its_start_and_says_so() -> None:
    plan = await OfflineRouter().plan(request("show firing alerts " + "x " * 3000), list(REGISTRY))
    assert skill_of(plan) == "alerts.list"
    assert plan.notes == ["Your message is 6,018 characters long; I read only its first 2,000."]


async def test_an_ambiguous_name_asks_which_one() -> None:
    inventory = Inventory()
    inventory.add("namespace", ["shop", "staging"])
    inventory.add("service", ["cart-api", "cart-web", "checkout"])
    inventory.add("deployment", ["checkout", "cart-api", "cart-web"])
    inventory.add("deployment/shop", ["checkout", "cart-api"])
    inventory.add("deployment/staging", ["checkout", "cart-web"])
    router = OfflineRouter(inventory)
    health = await router.plan(request("how is cart doing"), list(REGISTRY))
    assert (
        isinstance(health, Clarify)
        and health.question == "Which one do you mean: cart-api, cart-web?"
    )
    assert [c.args["service"] for c in health.choices] == ["cart-api", "cart-web"]
    where = await router.plan(request("restart checkout"), list(REGISTRY))
    assert isinstance(where, Clarify) and where.missing == ["namespace"]
    assert "checkout exists in several namespaces: shop, staging" in where.question


async def test_p99_latency_per_request() -> None:
    """The router alone, no inventory, no tracing, over every case of the three sets (after
    one warm-up pass): well under 5 ms per request p99 on a developer machine (the bound
    here is loose so a loaded CI runner does not flake)."""
    import time

    texts = [
        c.text
        for name in ("routing-dev.yaml", "routing-extra.yaml", "routing-adversarial.yaml")
        for c in load_cases(ROOT / "eval" / name)
    ]
    router, catalog = OfflineRouter(), list(REGISTRY)
    for text in texts:
        await router.plan(request(text), catalog)
    times = []
    for _ in range(3):
        for text in texts:
            started = time.perf_counter()
            await router.plan(request(text), catalog)
            times.append(time.perf_counter() - started)
    times.sort()
    assert times[int(len(times) * 0.99)] < 0.025


async def test_no_input_makes_the_router_raise() -> None:
    """Random text of every kind (control characters, emoji, scripts, brackets and quotes
    that do not close, kubectl fragments, huge tokens) gets a plan, never an exception."""
    import random

    rng = random.Random(12)
    pieces = [
        "kubectl", "-n", "--replicas=", "deploy/", "rollout", "undo", "scale", "restart", "{",
        "}", "(", ")", "[5m]", '"', "'", "`", "promql:", "logql:", "|=", "sum(rate(", "top",
        "5", "zero", "for 2h", "in shop", "checkout", "🔥", "ツ", "Ж", "\x00", "\u200b", "=",
        "?", "!", "\n", "x" * 300, "don't", "should we", "-o yaml", "secret", "exec", "--",
    ]  # fmt: skip
    router, catalog = OfflineRouter(), list(REGISTRY)
    for _ in range(400):
        text = " ".join(rng.choice(pieces) for _ in range(rng.randint(0, 12)))
        plan = await router.plan(request(text), catalog)
        assert plan.kind in ("run", "clarify", "answer"), text
