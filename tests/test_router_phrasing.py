"""Issue 12: the offline router on requests as SREs type them, by the general mechanism each
case exercises (typos of skill words, skill words used as names, everyday verbs and idioms,
"why" as a diagnosis, an expression after a word, days said by name). Each case is one
mechanism; the routing sets in ``eval/`` measure them together."""

from __future__ import annotations

from typing import Any

import pytest

from opsbot.intent import extract as ex
from opsbot.intent import lexicon, speech
from opsbot.intent.offline import OfflineRouter
from opsbot.model import Actor, Answer, Request, first_invocation
from opsbot.skills.base import load_registry

REGISTRY = load_registry()
WRITES = {s.name for s in REGISTRY if s.risk.value != "read"}


def request(text: str) -> Request:
    return Request(actor=Actor(id="shell:alice"), channel="test", text=text)


async def routed(text: str) -> tuple[str | None, dict[str, object]]:
    invocation = first_invocation(await OfflineRouter().plan(request(text), list(REGISTRY)))
    return (invocation.skill, invocation.args) if invocation else (None, {})


# -- a misspelt write word is still a write word, and still no name ---------------------------


@pytest.mark.parametrize(
    ("word", "meant"),
    [
        ("restrat", "restart"),  # two letters swapped
        ("rollbak", "rollback"),  # one dropped
        ("silennce", "silence"),  # one added
        ("scales", None),  # another form of the same word
        ("scaler", None),  # a longer word that starts with it: a name
        ("stale", None),  # a real word one letter away
        ("cart", None),  # too short to tell
    ],
)
def test_typo_of(word: str, meant: str | None) -> None:
    assert lexicon.typo_of(word, speech.WRITE_FORMS, ex.stem) == meant


@pytest.mark.parametrize(
    ("text", "mood"),
    [
        ("restrat orders in prod", "imperative"),
        ("don't restrat orders in prod", "negated"),
        ("should we rollbak payments in shop?", "question"),
    ],
)
def test_a_typo_neither_hides_a_write_nor_its_negation(text: str, mood: str) -> None:
    assert speech.write_mood(text).value == mood


async def test_a_negated_or_questioned_misspelt_write_plans_no_write() -> None:
    for text in ("don't restrat orders in prod", "should we rollbak payments in shop?"):
        plan = await OfflineRouter().plan(request(text), list(REGISTRY))
        invocation = first_invocation(plan)
        assert invocation is None or invocation.skill not in WRITES, (text, plan)
    assert await routed("restrat orders in prod") == (
        "k8s.restart",
        {"name": "orders", "namespace": "prod"},
    )


# -- a word other skills use names a service when nothing else does --------------------------


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        ("logs for search in prod past 2 hours", "k8s.logs", {"name": "search", "since": "2h"}),
        ("search is throwing 500s, dig in", "incident.triage", {"service": "search"}),
        ("scale search to nothing in prod", "k8s.scale", {"name": "search", "replicas": 0}),
        ("nudge the search pods in prod", "k8s.restart", {"name": "search", "namespace": "prod"}),
    ],
)
async def test_a_skill_word_in_a_name_slot_is_the_name(
    text: str, skill: str, args: dict[str, object]
) -> None:
    got, found = await routed(text)
    assert got == skill and {k: found.get(k) for k in args} == args, (got, found)


# -- everyday verbs and idioms ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        ("nudge cart in staging", "k8s.restart", {"name": "cart", "namespace": "staging"}),
        ("bump checkout to 4 in shop", "k8s.scale", {"name": "checkout", "replicas": 4}),
        ("put cart back to how it was in staging", "k8s.rollback", {"name": "cart"}),
        ("set payments in shop back a version", "k8s.rollback", {"name": "payments"}),
        ("end the silence 3f2a9c1e", "alerts.unsilence", {"id": "3f2a9c1e"}),
        ("kill silence 9b1d77aa", "alerts.unsilence", {"id": "9b1d77aa"}),
    ],
)
async def test_everyday_verbs_and_idioms(text: str, skill: str, args: dict[str, object]) -> None:
    got, found = await routed(text)
    assert got == skill and {k: found.get(k) for k in args} == args, (got, found)


async def test_what_the_idioms_are_about_is_no_write_when_asked() -> None:
    for text in ("should we put cart back in staging?", "don't end the silence 3f2a9c1e"):
        got, _ = await routed(text)
        assert got not in WRITES | {"alerts.unsilence"}, text


# -- "why" asks for a diagnosis; a symptom is no service -------------------------------------


async def test_why_with_a_symptom_is_a_diagnosis_of_the_service() -> None:
    assert await routed("why does checkout keep erroring in shop") == (
        "incident.triage",
        {"service": "checkout", "namespace": "shop", "since": "1h"},
    )
    # the error patterns themselves are still logs.errors
    got, found = await routed("what errors is checkout logging in shop?")
    assert got == "logs.errors" and found["service"] == "checkout"


# -- an expression after a word; PromQL's operators written apart ------------------------------


@pytest.mark.parametrize(
    ("text", "expr"),
    [
        ('loki query {namespace="prod"} |= "panic"', '{namespace="prod"} |= "panic"'),
        ("show sum (rate(x_total[5m]))", "sum (rate(x_total[5m]))"),
    ],
)
def test_an_expression_after_a_word(text: str, expr: str) -> None:
    assert ex.parse(text).expr == expr


async def test_logql_after_loki_query_is_a_log_query() -> None:
    got, found = await routed('loki query {namespace="prod", app="search"} |= "panic"')
    assert got == "logs.query" and found["query"] == '{namespace="prod", app="search"} |= "panic"'


# -- days said by name ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "since"),
    [("since yesterday", "1d"), ("errors overnight", "12h"), ("what broke last night", "12h")],
)
def test_days_said_by_name(text: str, since: str) -> None:
    assert ex.extract_since(ex.parse(text)) == since


async def test_a_chart_since_yesterday_spans_a_day() -> None:
    got, found = await routed("graph container_memory_working_set_bytes since yesterday")
    assert got == "prometheus.range"
    assert (found["query"], found["since"]) == ("container_memory_working_set_bytes", "1d")


async def test_bad_input_never_plans_anything() -> None:
    """Issue 12's bad input, with the new mechanisms in the path: nothing raises, nothing
    is planned, the answer is brief (a long run of one misspelt write word at most asks
    which deployment it is about)."""
    for text in ("", "🙈🙉🙊", "\x00\x13\x10\x99 restrat", "Ç" * 5000, "ärger " * 900):
        plan = await OfflineRouter().plan(request(text), list(REGISTRY))
        assert isinstance(plan, Answer) and len(plan.text) < 300, (text[:20], plan)
    plan = await OfflineRouter().plan(request("restrat " * 800), list(REGISTRY))
    assert first_invocation(plan) is None


# -- second batch: labels beside labels, verbs that open a request, idioms, counts -----------


@pytest.mark.parametrize(
    ("text", "matchers"),
    [
        ("any critical alerts on payments?", {"severity": "critical", "service": "payments"}),
        ("silence everything in staging for 2h, load test", {"namespace": "staging"}),
        ("snooze alerts with severity=warning for 3h", {"severity": "warning"}),
        ("mute checkout alerts in shop for 1h", {"service": "checkout", "namespace": "shop"}),
    ],
)
async def test_alert_matchers_from_words(text: str, matchers: dict[str, str]) -> None:
    _, found = await routed(text)
    assert found.get("matchers") == matchers, found


SECOND_BATCH: list[Any] = [
    (
        "figure out why inventory-api keeps restarting",
        "incident.triage",
        {"service": "inventory-api"},
    ),
    ("stream the checkout logs from shop", "k8s.logs", {"name": "checkout"}),
    ("Restart Checkout In Shop.", "k8s.restart", {"name": "checkout", "namespace": "shop"}),
    ("spin cart down in staging", "k8s.scale", {"name": "cart", "replicas": 0}),
    ("shut payments off in shop", "k8s.scale", {"name": "payments", "replicas": 0}),
    ("go back to the previous revision of orders in prod", "k8s.rollback", {"name": "orders"}),
    ("go back to the checkout logs in shop", "k8s.logs", {"name": "checkout"}),
    ("payments is down!!", "incident.triage", {"service": "payments"}),
    ("checkout down?", "incident.triage", {"service": "checkout"}),
    ("did the orders rollout go through in prod?", "k8s.rollout.status", {"name": "orders"}),
    ("when did payments last deploy in shop", "k8s.rollout.history", {"name": "payments"}),
    ("turn off alerts for checkout for 1h", "alerts.silence", {"duration": "1h"}),
]


@pytest.mark.parametrize(
    ("text", "mood"),
    [
        ("we should probably restart checkout at some point", "hypothetical"),
        ("we should restart checkout", "hypothetical"),
        ("should we restart checkout?", "question"),
        ("how many restarts did the checkout pods have in the last 24h", "noun"),
        ("don't turn off the payments alerts", "negated"),
    ],
)
def test_suggestions_and_counts_ask_for_no_write(text: str, mood: str) -> None:
    assert speech.write_mood(text).value == mood


async def test_a_suggestion_plans_nothing() -> None:
    for text in ("we should probably restart checkout at some point", "don't turn off alerts"):
        assert await routed(text) == (None, {}), text


async def test_a_count_over_a_window_is_the_recipe() -> None:
    """``Recipe.windowed``: the restarts recipe's words with a time window ask for it (the pod
    list shows restart counts, but not over a window)."""
    got, found = await routed("how many restarts did the checkout pods have in the last 24h")
    assert got == "prometheus.query"
    assert "kube_pod_container_status_restarts_total" in str(found["query"])
    assert str(found["query"]).endswith("[24h]))")
    got, _ = await routed("restart count of the checkout pods in shop?")
    assert got == "k8s.pods"


# -- third batch: "for a week", ack, "bring X up to N", breakdowns, "on X" --------------------


def test_a_chart_span_after_for_is_no_part_of_the_expression() -> None:
    parsed = ex.parse("plot up for a week")
    assert (parsed.expr, ex.extract_for_duration(parsed)) == ("up", "1w")
    assert ex.parse("graph up for 3h").expr == "up"


THIRD_BATCH: list[Any] = [
    ("plot up for a week", "prometheus.range", {"query": "up", "since": "1w"}),
    (
        "ack KubeDeploymentReplicasMismatch for 1h",
        "alerts.silence",
        {"matchers": {"alertname": "KubeDeploymentReplicasMismatch"}, "duration": "1h"},
    ),
    ("bring checkout back up to 3 in shop", "k8s.scale", {"name": "checkout", "replicas": 3}),
    ("bring up the checkout logs in shop", "k8s.logs", {"name": "checkout"}),
    ("dump the last 20 lines from search in prod", "k8s.logs", {"name": "search", "tail": 20}),
    ("latency spike on search, can you dig into it", "incident.triage", {"service": "search"}),
    ("cycle auth on staging", "k8s.restart", {"name": "auth", "namespace": "staging"}),
]


def test_ack_is_a_write_word() -> None:
    assert speech.write_mood("don't ack HighErrorRate").value == "negated"
    assert speech.write_mood("who acked HighErrorRate?").value == "report"


@pytest.mark.parametrize(
    ("text", "by"),
    [
        ("p99 latency per service", "by (le, service)"),
        ("error rate by namespace", "by (namespace)"),
    ],
)
async def test_a_breakdown_asks_for_the_recipe(text: str, by: str) -> None:
    got, found = await routed(text)
    assert got == "prometheus.query" and by in str(found["query"]), found


def test_on_names_an_environment_or_what_the_inventory_knows() -> None:
    assert ex.extract_namespace(ex.parse("restart cart on staging")) == "staging"
    assert ex.extract_namespace(ex.parse("latency spike on search")) is None
    assert ex.extract_namespace(ex.parse("restart cart on shop"), {"shop"}) == "shop"
    assert ex.extract_namespace(ex.parse("logs of cart from shop")) == "shop"


# -- fourth batch ------------------------------------------------------------------------------


FOURTH_BATCH: list[Any] = [
    ("show deployments in shop", "k8s.pods", {"namespace": "shop"}),
    ("what version of checkout is running in shop", "k8s.describe", {"name": "checkout"}),
    (
        "check node_memory_MemAvailable_bytes",
        "prometheus.query",
        {"query": "node_memory_MemAvailable_bytes"},
    ),
    (
        "grep timeout in the checkout logs",
        "logs.query",
        {"query": '{service="checkout"} |= "timeout"'},
    ),
    ("help me with silences", "help", {}),
    ("reduce checkout to 2 pods in shop", "k8s.scale", {"name": "checkout", "replicas": 2}),
    (
        "add more replicas to search in prod, make it 6",
        "k8s.scale",
        {"name": "search", "namespace": "prod", "replicas": 6},
    ),
    (
        "please roll the payments deployment in shop back to rev 12",
        "k8s.rollback",
        {"name": "payments", "revision": 12},
    ),
    ("show the pods with label app=cart in staging", "k8s.pods", {"selector": "app=cart"}),
    (
        "checkout is slow for customers in shop, please investigate",
        "incident.triage",
        {"service": "checkout", "namespace": "shop"},
    ),
    ("payments keeps OOMing", "incident.triage", {"service": "payments"}),
    (
        "help, orders in prod is on fire",
        "incident.triage",
        {"service": "orders", "namespace": "prod"},
    ),
    ("new errors in checkout since the release?", "logs.errors", {"service": "checkout"}),
]


@pytest.mark.parametrize(
    "text",
    [
        "is it a good idea to bounce checkout now?",
        "don't reduce checkout to 2 pods in shop",
        "please don't roll the payments deployment in shop back to rev 12",
    ],
)
async def test_no_write_from_these_either(text: str) -> None:
    got, _ = await routed(text)
    assert got not in WRITES, text


def test_the_opening_verb_names_nothing() -> None:
    assert ex.opening_verb(ex.parse("add more replicas to search")) == "add"
    assert ex.opening_verb(ex.parse("checkout is down")) is None


# -- fifth batch -------------------------------------------------------------------------------


FIFTH_BATCH: list[Any] = [
    ("roll out a restart of cart in staging", "k8s.restart", {"name": "cart"}),
    ("what's the request rate for checkout", "service.health", {"service": "checkout"}),
    ("end all silences on checkout", "alerts.unsilence", {"matchers": {"service": "checkout"}}),
    ("users are seeing 502s on cart", "incident.triage", {"service": "cart"}),
    ("diagnose orders", "incident.triage", {"service": "orders"}),
    (
        "Alert: HighLatency firing on payments (shop)",
        "incident.triage",
        {"alert": "HighLatency"},
    ),
    ("[ALERT] KubePodCrashLooping cart", "incident.triage", {"alert": "KubePodCrashLooping"}),
]


@pytest.mark.parametrize(("text", "ranked"), [("which service is slowest", "histogram_quantile")])
async def test_superlatives_rank(text: str, ranked: str) -> None:
    got, found = await routed(text)
    assert got == "prometheus.query" and str(found["query"]).startswith("topk(10, " + ranked)


async def test_only_a_notification_s_shape_is_rewritten() -> None:
    """ "alert: restart checkout" is no pasted alert (no alert name after the colon)."""
    assert speech.write_mood("alert: restart checkout in shop").value == "imperative"
    got, _ = await routed("alert: restart checkout in shop")
    assert got == "k8s.restart"


# -- sixth batch -------------------------------------------------------------------------------


SIXTH_BATCH: list[Any] = [
    (
        "lemme see checkout's rollout history in shop",
        "k8s.rollout.history",
        {"name": "checkout"},
    ),
    ("shop: bounce payments", "k8s.restart", {"name": "payments", "namespace": "shop"}),
    ("`kubectl get pods -n shop`", "k8s.pods", {"namespace": "shop"}),
    ("last fifty lines of cart logs in staging", "k8s.logs", {"tail": 50}),
    ("errors from payments over the last couple of hours", "logs.errors", {"since": "2h"}),
    ("graph node_load1 over the past ninety minutes", "prometheus.range", {"since": "90m"}),
    ("payments latency looks bad, why", "incident.triage", {"service": "payments"}),
    (
        "please mute the payments pages until tomorrow",
        "alerts.silence",
        {"matchers": {"service": "payments"}, "duration": "1d"},
    ),
]


@pytest.mark.parametrize(
    "text",
    [
        "`kubectl rollout restart deploy/cart -n shop`",
        "```kubectl scale deploy/cart --replicas=0 -n shop```",
        "show me the runbook for HighErrorRate",
        "who is on call this week?",
    ],
)
async def test_pasted_writes_and_unknown_things_plan_nothing(text: str) -> None:
    assert await routed(text) == (None, {}), text


def test_numbers_in_words_and_days_in_durations() -> None:
    assert [d.value for d in ex.parse("for a few hours").durations] == ["3h"]
    assert [d.value for d in ex.parse("in the last fifteen mins").durations] == ["15m"]
    assert ex.parse("scale to two s").durations == []  # a word count takes a word unit
    assert speech.write_mood("mute the payments alerts until tomorrow").value == "imperative"
    assert speech.write_mood("we restart payments tomorrow").value == "hypothetical"


def test_a_namespace_before_a_colon() -> None:
    assert ex.extract_namespace(ex.parse("prod: restart cart")) == "prod"
    assert ex.extract_namespace(ex.parse("fyi: restart cart")) is None


# -- seventh batch -----------------------------------------------------------------------------


SEVENTH_BATCH: list[Any] = [
    ("actions in the last day", "audit.search", {"since": "1d"}),
    ("run this: sum(up)", "prometheus.query", {"query": "sum(up)"}),
    ("instant query up", "prometheus.query", {"query": "up"}),
    ("trend of 5xx for payments over a day", "prometheus.range", {"since": "1d"}),
    (
        "what's silenced for payments?",
        "alerts.list",
        {"state": "silenced", "matchers": {"service": "payments"}},
    ),
    ("I think cart is leaking memory", "incident.triage", {"service": "cart"}),
]


def test_a_silenced_state_is_no_report_of_a_silence() -> None:
    assert speech.write_mood("what's silenced for payments").value == "noun"
    assert speech.write_mood("who silenced payments").value == "report"


# -- eighth batch ------------------------------------------------------------------------------


EIGHTH_BATCH: list[Any] = [
    ("show me pods for app=checkout in shop", "k8s.pods", {"selector": "app=checkout"}),
    ("alerts for team payments", "alerts.list", {"matchers": {"team": "payments"}}),
    ("scale deploy checkout 3 -n shop", "k8s.scale", {"name": "checkout", "replicas": 3}),
    (
        "why is the checkout pod crashlooping in shop",
        "incident.triage",
        {"service": "checkout"},
    ),
    ("cart has been erroring since the deploy at 2pm", "incident.triage", {"service": "cart"}),
    ("anything weird in prod?", "incident.triage", {"namespace": "prod"}),
    ("restart checkout (shop)", "k8s.restart", {"name": "checkout", "namespace": "shop"}),
    (
        "scale checkout in shop to 3, then tell me the rollout status",
        "k8s.scale",
        {"replicas": 3},
    ),
]


async def test_top_pods_is_the_top_recipe_unless_a_measure_is_named() -> None:
    """``Recipe.ranked=False``: "top pods" names the recipe itself (not wrapped in topk);
    "top 5 pods by cpu" is the cpu recipe, ranked."""
    got, found = await routed("top pods in shop")
    assert got == "prometheus.query" and str(found["query"]).startswith("label_replace(")
    assert 'namespace="shop"' in str(found["query"])
    got, found = await routed("top pods by cpu in shop")
    assert got == "prometheus.query" and str(found["query"]).startswith("topk(10, sum by (pod)")


def test_a_whole_request_that_is_an_expression() -> None:
    logql = 'sum by (app) (count_over_time({namespace="shop"} |= "error" [5m]))'
    parsed = ex.parse(logql)
    assert (parsed.expr, parsed.expr_kind) == (logql, "logql")
    assert ex.parse("restart checkout (shop)").expr is None
    assert ex.parse("[FIRING:1] HighErrorRate checkout (shop critical)").expr != (
        "[FIRING:1] HighErrorRate checkout (shop critical)"
    )


# -- tenth batch -------------------------------------------------------------------------------


TENTH_BATCH: list[Any] = [
    ("root-cause the 5xx spike on checkout", "incident.triage", {"service": "checkout"}),
    ("what broke payments?", "incident.triage", {"service": "payments"}),
    ("why did orders restart?", "incident.triage", {"service": "orders"}),
    (
        "KubePodCrashLooping firing for cart in staging, what do I do",
        "incident.triage",
        {"alert": "KubePodCrashLooping"},
    ),
]


@pytest.mark.parametrize(
    ("text", "starts"),
    [
        ("network usage of checkout in shop", "sum by (pod) (rate(container_network_receive"),
        ("which pods use the most network bandwidth in prod", "topk(10, sum by (pod)"),
    ],
)
async def test_the_network_recipe(text: str, starts: str) -> None:
    got, found = await routed(text)
    assert got == "prometheus.query" and str(found["query"]).startswith(starts), found


# -- talk about the new write words plans no write ---------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "don't nudge cart in shop",
        "should I bump checkout to 4 in shop?",
        "we bumped checkout to 4 in shop yesterday",
        "who acked HighErrorRate?",
        "did someone turn off the checkout alerts?",
        "I'd go back to the previous revision of cart in shop if I were you",
        "put cart back in staging?",
        "add more replicas to search in prod?",
        "never shut payments down in shop",
        "no need to reduce checkout to 2 in shop",
        "maybe bring checkout back up to 3 in shop later",
        "the runbook says 'shut payments off in shop'",
        "`kubectl scale deploy/cart --replicas=0 -n shop` is what bob ran",
        "don't end the silence 3f2a9c1e",
        "can you spin cart down in staging?",
        "restrat checkout in shop?",
        "dont restrat checkout in shop",
        "bob kicked the cart pods in shop an hour ago",
        "we should roll payments back in shop",
        "what if we took orders down to zero in prod",
        "shop: don't bounce payments",
        "help, don't restart anything",
        "scale checkout in shop to 3? then tell me",
        "if latency spikes, then restart checkout in shop",
    ],
)
async def test_talk_about_the_new_write_words_plans_no_write(text: str) -> None:
    """Negations, questions, reports, suggestions, conditions and quotes around the words
    this issue added (nudge, bump, ack, turn off, go back, put back, spin/shut/take down,
    reduce to, add replicas, end the silence, misspellings): never a write."""
    got, _ = await routed(text)
    assert got not in WRITES | {"alerts.unsilence"}, text


def test_a_condition_or_an_asked_clause_is_no_order() -> None:
    assert speech.write_mood("if latency spikes, then restart checkout in shop").value == (
        "hypothetical"
    )
    assert speech.write_mood("scale checkout in shop to 3? then tell me").value == "question"
    assert speech.write_mood("restart checkout in shop, then tell me").value == "imperative"


# -- eleventh batch ----------------------------------------------------------------------------


ELEVENTH_BATCH: list[Any] = [
    ("checkout ok?", "service.health", {"service": "checkout"}),
    ("is payments up?", "service.health", {"service": "payments"}),
    ("red for checkout in shop", "service.health", {"service": "checkout"}),
    ("what's on fire?", "alerts.list", {}),
    (
        "quiet the checkout alerts for an hour",
        "alerts.silence",
        {"matchers": {"service": "checkout"}, "duration": "1h"},
    ),
    ("hungriest pods in staging", "prometheus.query", {}),
    ("replicas of checkout in shop", "k8s.describe", {"name": "checkout"}),
    ("is checkout rolled out in shop", "k8s.rollout.status", {"name": "checkout"}),
]


@pytest.mark.parametrize("text", ["sounds ok", "looks ok", "ok thanks", "is it up"])
async def test_an_idiom_that_ends_a_question_does_not_end_a_remark(text: str) -> None:
    """``$`` in a lexicon idiom is where a question ends: "checkout ok?" asks for health,
    "sounds ok" asks nothing."""
    assert await routed(text) == (None, {}), text
    assert ex.END not in ex.parse(text).canon


async def test_a_lexicon_word_names_a_service_where_its_skill_is_not_asked() -> None:
    """ "quiet" is a silence word, yet "errors from quiet" names the service: a synonym keeps
    only the skills it is a word of from taking it as a name."""
    assert await routed("errors from quiet") == (
        "logs.errors",
        {"service": "quiet", "since": "1h", "top": 10},
    )


# -- twelfth batch: typos of short words, terse chat, actions no skill takes -------------------


TWELFTH_BATCH: list[Any] = [
    ("scael payments to 3 in shop", "k8s.scale", {"name": "payments", "replicas": 3}),
    ("lgos of checkout in shop", "k8s.logs", {"name": "checkout"}),
    ("helath of checkout", "service.health", {"service": "checkout"}),
    ("evnets in staging", "k8s.events", {"namespace": "staging"}),
    ("pdos in shop", "k8s.pods", {"namespace": "shop"}),
    ("alrets for payments", "alerts.list", {"matchers": {"service": "payments"}}),
    ("cart pods staging", "k8s.pods", {"name": "cart", "namespace": "staging"}),
]


def test_a_short_word_is_a_typo_only_with_two_letters_swapped() -> None:
    vocabulary = frozenset({"pod", "log", "chart", "scal"})
    assert lexicon.typo_of("pdo", vocabulary, ex.stem) == "pod"
    assert lexicon.typo_of("cart", vocabulary, ex.stem) is None  # not "chart"
    assert lexicon.typo_of("broker", frozenset({"broken"}), ex.stem) is None  # a real word


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("deploy checkout v2 to prod", "I don't deploy anything"),
        ("please install the redis chart in shop", "I don't install anything"),
        ("approve abc123", "Approve/Deny buttons"),
    ],
)
async def test_an_action_no_skill_takes_is_refused(text: str, says: str) -> None:
    plan = await OfflineRouter().plan(request(text), list(REGISTRY))
    assert isinstance(plan, Answer) and says in plan.text, plan


# -- fourteenth batch: requests inside chat ----------------------------------------------------


FOURTEENTH_BATCH: list[Any] = [
    (
        "hey team, checkout has been flaky all morning. can you check its logs in shop?",
        "k8s.logs",
        {"name": "checkout", "namespace": "shop"},
    ),
    (
        "context: deploy went out at 10. question: is payments healthy?",
        "service.health",
        {"service": "payments"},
    ),
    (
        "Can you pull the last 100 lines from the payments pods in shop?",
        "k8s.logs",
        {"name": "payments", "tail": 100},
    ),
    ("mind graphing up for the last hour?", "prometheus.range", {"query": "up", "since": "1h"}),
    (
        "is the checkout deployment in shop fully rolled out?",
        "k8s.rollout.status",
        {"name": "checkout"},
    ),
    ("logs from checkout matching 'timeout' in namespace shop", "logs.query", {}),
]


@pytest.mark.parametrize(
    "text",
    [
        "heads up, I'm going to restart checkout in shop",
        "we'll roll back payments in shop after lunch",
        "I am about to scale cart in staging to 0",
    ],
)
async def test_an_intent_announced_is_no_order(text: str) -> None:
    assert speech.write_mood(text).value == "hypothetical"
    assert await routed(text) == (None, {})


# -- fifteenth batch ---------------------------------------------------------------------------


FIFTEENTH_BATCH: list[Any] = [
    ("show crashlooping pods across shop", "k8s.pods", {"namespace": "shop"}),
    ("what node is checkout on in shop", "k8s.pods", {"name": "checkout"}),
    ("what's the resource limit on checkout in shop", "k8s.describe", {"name": "checkout"}),
    ("kill the checkout pods in shop so they come back", "k8s.restart", {"name": "checkout"}),
    ("go ahead and roll back orders in prod", "k8s.rollback", {"name": "orders"}),
    ("yes, restart checkout in shop", "k8s.restart", {"name": "checkout"}),
    ("who created the silence on checkout?", "alerts.silences", {}),
    ("success rate of checkout", "service.health", {"service": "checkout"}),
    (
        "search results are empty, investigate search in prod",
        "incident.triage",
        {"service": "search", "namespace": "prod"},
    ),
    ("why is search crashing", "incident.triage", {"service": "search"}),
    ("tail errors for cart in staging", "logs.errors", {"service": "cart"}),
    ('find "NullPointerException" in the payments logs', "logs.query", {}),
    ("restart the stuck cart pods in staging", "k8s.restart", {"name": "cart"}),
]


async def test_silence_it_without_a_subject_asks_what() -> None:
    plan = await OfflineRouter().plan(request("silence it for another hour"), list(REGISTRY))
    assert first_invocation(plan) is None
    assert speech.write_mood("don't kill the checkout pods").value == "negated"


# -- seventeenth batch -------------------------------------------------------------------------


SEVENTEENTH_BATCH: list[Any] = [
    ("orders p99 is through the roof", "incident.triage", {"service": "orders"}),
    ("is search overloaded?", "incident.triage", {"service": "search"}),
    ("pods stuck in pending in prod", "k8s.pods", {"namespace": "prod"}),
    ("has checkout finished deploying in shop?", "k8s.rollout.status", {"name": "checkout"}),
    ("restart orders in prod, it's leaking memory", "k8s.restart", {"name": "orders"}),
    (
        "scale payments in shop to 0 for the maintenance",
        "k8s.scale",
        {"name": "payments", "replicas": 0},
    ),
    ("double check the cart logs in staging for errors", "logs.errors", {"service": "cart"}),
    ("silence disk alerts on node-7 for 2 hours", "alerts.silence", {"duration": "2h"}),
    ("show audit entries for k8s.scale", "audit.search", {"skill": "k8s.scale"}),
]


def test_the_order_in_a_request_with_its_reason() -> None:
    assert speech.ordered("restart orders in prod, it's leaking memory") == "restart orders in prod"
    assert speech.ordered("show audit entries for k8s.scale") == ""  # a dot inside a word


@pytest.mark.parametrize(
    ("text", "skill"),
    [
        ("error budget of checkout", "service.health"),
        ("what's causing the errors on payments?", "incident.triage"),
    ],
)
async def test_eighteenth_batch_of_everyday_phrasing(text: str, skill: str) -> None:
    got, found = await routed(text)
    assert got == skill, (got, found)


# -- nineteenth batch: chat's short forms ------------------------------------------------------


@pytest.mark.parametrize(
    ("short", "word"), [("hist", "history"), ("prev", "previous"), ("errs", "errors")]
)
def test_an_abbreviation_reads_as_its_word(short: str, word: str) -> None:
    assert ex.stem(short) == ex.stem(word)


@pytest.mark.parametrize(
    ("word", "meant"),
    [
        ("evnt", "event"),  # vowels dropped
        ("rstrt", "restart"),
        ("crt", None),  # too short to tell
        ("rest", None),  # a vowel kept: a word of its own, not "reset"
    ],
)
def test_a_word_with_its_vowels_dropped(word: str, meant: str | None) -> None:
    assert lexicon.typo_of(word, {"event", "restart", "reset", "chart"}) == meant


NINETEENTH_BATCH: list[Any] = [
    ("evnts in payments last 1h", "k8s.events", {"namespace": "payments", "since": "1h"}),
    ("rollout hist auth-gw identity ns", "k8s.rollout.history", {"name": "auth-gw"}),
    ("rollbak recsys in ml to prev version", "k8s.rollback", {"name": "recsys"}),
    ("top errs for notif-worker last 2h", "logs.errors", {"service": "notif-worker"}),
]


# -- twentieth batch: long, polite messages with context around the request --------------------


@pytest.mark.parametrize(
    ("text", "mood"),
    [
        ("could you please do a rolling restart of thumbnailer in media?", "imperative"),
        ("would you mind taking cart down to zero until we're done?", "imperative"),
        ("could you remove the silence 0c9d3e55 so we get alerted again?", "imperative"),
        ("can you restart payments?", "question"),  # may ask what the bot can do
        ("would you restart cart if it gets worse?", "hypothetical"),
        ("priya already scaled report-builder in analytics to 4 replicas", "report"),
        (
            "we're on it. please silence the postgres alerts with the comment 'planned'",
            "imperative",
        ),
        ("what did kube_deployment_status_replicas_unavailable do in the past 4h?", "none"),
    ],
)
def test_a_polite_request_is_an_order(text: str, mood: str) -> None:
    assert speech.write_mood(text).value == mood


def test_the_sentences_that_ask_are_the_focus() -> None:
    said = "Sorry to bother you. The broker feels off. Could you give me its RED metrics so I can tell?"
    assert speech.focus(said) == "Could you give me its RED metrics?"
    assert speech.focus("show me the pods in shop") == "show me the pods in shop"
    assert not speech.requests("Thanks for the help yesterday! Have a lovely weekend everyone!")
    assert speech.without_alternatives("should we roll it back, or wait for the fix?") == (
        "should we roll it back?"
    )


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        (
            "The batch cluster is drained tonight, so the nightly-etl deployment in the data "
            "namespace has nothing to do. Would you mind taking it down to zero until we're done?",
            "k8s.scale",
            {"name": "nightly-etl", "namespace": "data", "replicas": 0},
        ),
        (
            "Last time the tracking pixel service fell over under load. Please scale "
            "pixel-tracker in the growth namespace up to 12 replicas ahead of that.",
            "k8s.scale",
            {"name": "pixel-tracker", "replicas": 12},
        ),
        (
            "I'm investigating a CrashLoopBackOff report from a colleague. Can you show me the "
            "pods in the warehouse namespace?",
            "k8s.pods",
            {"namespace": "warehouse"},
        ),
        (
            "Sorry to bother you on a Sunday. The mobile team says the session-broker in "
            "identity feels off. Could you give me its RED metrics so I can tell if it's real?",
            "service.health",
            {"service": "session-broker", "namespace": "identity"},
        ),
        (
            "I'd like to double-check the limits. Please describe the deployment quote-engine "
            "in the insurance namespace.",
            "k8s.describe",
            {"name": "quote-engine"},
        ),
        (
            "The webhook-dispatcher in integrations throws a lot since the partner API "
            "changed. Could you summarise the most common error patterns from the last 6h?",
            "logs.errors",
            {"service": "webhook-dispatcher", "since": "6h"},
        ),
        (
            "Could you run this PromQL for me: sum(rate(x_total[5m])) by (le)",
            "prometheus.query",
            {"query": "sum(rate(x_total[5m])) by (le)"},
        ),
        (
            "the new build of avatar-service looks flaky. Should we roll it back, or wait "
            "for the hotfix?",
            None,
            {},
        ),
        ("Thanks for all the help yesterday, it was appreciated. Have a lovely weekend!", None, {}),
        ("Priya already scaled report-builder in analytics to 4 replicas, fyi", None, {}),
    ],
)
async def test_twentieth_batch_of_long_messages(
    text: str, skill: str | None, args: dict[str, object]
) -> None:
    got, found = await routed(text)
    assert got == skill and {k: found.get(k) for k in args} == args, (got, found)


# -- twenty-second batch: plain English from developers ----------------------------------------


def test_the_stemmer_knows_be_have_go_and_ies() -> None:
    assert [ex.stem(w) for w in ("has", "been", "being", "going", "copies", "replied")] == [
        "have",
        "be",
        "be",
        "go",
        "copy",
        "reply",
    ]


def test_a_longer_idiom_supersedes_the_shorter_inside_it() -> None:
    """'turn it off and on again' is a restart, not 'switch * off' (to zero replicas)."""
    again = ex.canonical(list(ex.phrase("switch it off and on again")))
    assert ex.stem("restart") in again and ex.stem("scale") not in again
    assert ex.stem("scale") in ex.canonical(list(ex.phrase("switch it off now")))


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        (
            "turn the recommendations service off and on again, it's in the ml namespace",
            "k8s.restart",
            {"name": "recommendations", "namespace": "ml"},
        ),
        (
            "please restart my app, it's called pdf-renderer and lives in the docs namespace",
            "k8s.restart",
            {"name": "pdf-renderer", "namespace": "docs"},
        ),
        (
            "we expect a lot of signups tomorrow, please run 10 copies of signup-api in onboarding",
            "k8s.scale",
            {"name": "signup-api", "replicas": 10},
        ),
        (
            "please switch off the legacy-importer in the migration namespace completely",
            "k8s.scale",
            {"name": "legacy-importer", "namespace": "migration", "replicas": 0},
        ),
        ("are there any alerts going off?", "alerts.list", {"state": "firing"}),
        ("how many times have the cache-warmer pods restarted today?", "prometheus.query", {}),
        ("can you draw a chart of up for the last 2h", "prometheus.range", {"query": "up"}),
        (
            "what is my app printing out? it's survey-api in forms",
            "k8s.logs",
            {"name": "survey-api"},
        ),
        (
            "did my new version of quiz-engine in learning finish going out?",
            "k8s.rollout.status",
            {},
        ),
        (
            "which versions of quiz-engine in learning were released before?",
            "k8s.rollout.history",
            {},
        ),
        (
            "what has been happening in the sandbox namespace?",
            "k8s.events",
            {"namespace": "sandbox"},
        ),
        ("show me all the settings of the deployment badge-service in games", "k8s.describe", {}),
        (
            "the search page is super slow, why is search-frontend slow?",
            "incident.triage",
            {"service": "search-frontend"},
        ),
        ("can you clean up my namespace? kubectl delete pods --all -n sandbox", None, {}),
    ],
)
async def test_twenty_second_batch_of_plain_english(
    text: str, skill: str | None, args: dict[str, object]
) -> None:
    got, found = await routed(text)
    assert got == skill and {k: found.get(k) for k in args} == args, (got, found)


async def test_a_pasted_command_opsbot_never_runs_is_refused_after_words() -> None:
    answer = await OfflineRouter().plan(
        request("my lead says to run this: kubectl delete pods --all -n sandbox"), list(REGISTRY)
    )
    assert isinstance(answer, Answer) and "I don't delete" in answer.text


# -- twenty-third batch: pasted alerts in thread replies --------------------------------------


async def test_a_pasted_alert_is_what_a_short_question_before_it_asks_about() -> None:
    text = (
        "can someone look at this? started 5 min ago\n"
        "[FIRING:2] HighErrorRate (ledger-api finance page)\n"
        "Summary: ledger-api 5xx ratio above 5% for 10m"
    )
    assert speech.focus(text) == text
    got, _ = await routed(text)
    assert got == "incident.triage"


async def test_what_the_order_leaves_unsaid_comes_from_the_rest() -> None:
    """The order ('silence HighErrorRate for 1h') gives its arguments first; a comment said
    after it ('..., cli test') still comes from the rest of the request."""
    got, found = await routed("silence HighErrorRate for 1h, cli test")
    assert got == "alerts.silence" and found["comment"] == "cli test", found


async def test_thanks_before_a_request_is_no_name() -> None:
    got, found = await routed("thanks! now show me the pods in shop")
    assert got == "k8s.pods" and "name" not in found, found


# -- twenty-fourth batch: incident-time messages ----------------------------------------------


@pytest.mark.parametrize(
    ("text", "query", "since"),
    [
        ("graph up for the last 30m, half the targets look gone", "up", "30m"),
        ("chart rate(x_total[5m]) over 3h; looks flat to me", "rate(x_total[5m])", "3h"),
        ("graph sum by (job, instance) (up) for 6h", "sum by (job, instance) (up)", "6h"),
    ],
)
async def test_a_remark_after_a_comma_is_no_part_of_the_expression(
    text: str, query: str, since: str
) -> None:
    got, found = await routed(text)
    assert (got, found.get("query"), found.get("since")) == ("prometheus.range", query, since)


def test_a_time_tail_may_count_in_words() -> None:
    assert ex.strip_time_tail("up for the past two hours") == ("up", "for the past two hours")


# -- twenty-fifth batch: other tools' words, SRE slang ---------------------------------------


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        ("which datadog monitors are triggered?", "alerts.list", {"state": "firing"}),
        ("any monitors in alert for cart", "alerts.list", {"state": "firing"}),
        ("timeseries of process_open_fds for 2h", "prometheus.range", {"since": "2h"}),
        ("set the desired count of mailer to 2 in comms", "k8s.scale", {"replicas": 2}),
        ("force a new deployment of mailer in comms", "k8s.restart", {"name": "mailer"}),
    ],
)
async def test_other_tools_words_read_as_ours(
    text: str, skill: str, args: dict[str, object]
) -> None:
    got, found = await routed(text)
    assert got == skill and args.items() <= found.items(), found


async def test_last_n_alone_counts_log_lines() -> None:
    got, found = await routed("logs of mailer in comms, last 20")
    assert got == "k8s.logs" and found.get("tail") == 20, found
    got, found = await routed("logs of mailer in comms for the last 20 minutes")
    assert found.get("tail") != 20 and found.get("since") == "20m", found


async def test_paging_people_is_refused() -> None:
    answer = await OfflineRouter().plan(request("page the payments on-call"), list(REGISTRY))
    assert isinstance(answer, Answer) and "I don't page" in answer.text


async def test_a_kind_word_in_a_compound_noun_names_no_workload() -> None:
    got, found = await routed("the pingdom service check for ledger is failing, dig in")
    assert got == "incident.triage" and found.get("service") == "ledger", found


# -- twenty-sixth batch: audit, approvals, silences; durations written many ways --------------


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("for 1.5h", "90m"),
        ("for an hour and a half", "90m"),
        ("for two and a half hours", "150m"),
        ("over the last quarter hour", "15m"),
        ("three quarters of an hour", "45m"),
        ("half a day", "12h"),
        ("for 2.5 days", "60h"),
    ],
)
def test_a_duration_may_hold_a_fraction(text: str, value: str) -> None:
    assert [d.value for d in ex.find_durations(text)] == [value]


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        ("silence kafka alerts for 2.5h", "alerts.silence", {"duration": "150m"}),
        ("events in ml from the last quarter hour", "k8s.events", {"since": "15m"}),
        (
            "which rollbacks went through the bot today",
            "audit.search",
            {"skill": "k8s.rollback"},
        ),
        ("restarts done via opsbot this week", "audit.search", {"skill": "k8s.restart"}),
        ("anything waiting on my sign-off?", "approvals.pending", {}),
        ("what can you do with alerts?", "help", {}),
    ],
)
async def test_twenty_sixth_batch_of_audit_and_durations(
    text: str, skill: str, args: dict[str, object]
) -> None:
    got, found = await routed(text)
    assert got == skill and args.items() <= found.items(), (got, found)
    assert "target" not in found, found  # "rollbacks went ...": a plural names no target


# -- the batches of dev requests, each a case of one general mechanism above ------------------


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        *SECOND_BATCH,
        *THIRD_BATCH,
        *FOURTH_BATCH,
        *FIFTH_BATCH,
        *SIXTH_BATCH,
        *SEVENTH_BATCH,
        *EIGHTH_BATCH,
        *TENTH_BATCH,
        *ELEVENTH_BATCH,
        *TWELFTH_BATCH,
        *FOURTEENTH_BATCH,
        *FIFTEENTH_BATCH,
        *SEVENTEENTH_BATCH,
        *NINETEENTH_BATCH,
    ],
)
async def test_batches_of_everyday_phrasing(text: str, skill: str, args: dict[str, object]) -> None:
    got, found = await routed(text)
    assert got == skill and {k: found.get(k) for k in args} == args, (got, found)
