"""A safety review of the router's mood (2026-11-24): a write is planned only from an
imperative request for it, never from a negation, question, condition, report, retraction or
quote. Each test is one general mechanism the review's probes broke; ``eval/routing-
adversarial.yaml`` holds the probes themselves."""

from __future__ import annotations

import pytest

from opsbot.intent import extract as ex
from opsbot.intent import lexicon, speech
from opsbot.intent.offline import OfflineRouter
from opsbot.model import Actor, Request, first_invocation
from opsbot.skills.base import load_registry

REGISTRY = load_registry()
WRITES = {s.name for s in REGISTRY if s.risk.value != "read"}


async def routed(text: str) -> tuple[str | None, dict[str, object]]:
    said = Request(actor=Actor(id="shell:alice"), channel="test", text=text)
    invocation = first_invocation(await OfflineRouter().plan(said, list(REGISTRY)))
    return (invocation.skill, invocation.args) if invocation else (None, {})


@pytest.mark.parametrize(
    ("text", "mood"),
    [
        ("could you restart cart in shop? actually no, don't restart it", "negated"),
        ("could you restart cart in shop - actually no, don't restart it", "negated"),
        ("will you roll back checkout in shop? no, wait", "negated"),
        ("could you restart cart in shop? nvm, I'll do it myself", "negated"),
        ("could you please restart cart in shop? just kidding", "negated"),
        ("cheers. will you scale cart in shop to 3? just asking", "negated"),
        ("restart cart in shop. no wait, hold off", "negated"),  # not only a polite one
        ("could you restart cart in shop or is that too risky?", "question"),
        ("could you silence HighErrorRate for 1h or let it page?", "question"),
        ("what do you think, could you roll back checkout in shop?", "question"),
        ("will you restart cart in shop automatically when it crashes?", "hypothetical"),
        # taken back before, or not at all: still an order
        ("no, not checkout: restart payments in shop", "imperative"),
        ("could you please restart cart in shop? no rush", "imperative"),
        ("could you please restart cart in shop? thanks!", "imperative"),
    ],
)
def test_a_polite_request_is_one_signal_not_an_override(text: str, mood: str) -> None:
    assert speech.write_mood(text).value == mood


@pytest.mark.parametrize(
    "text",
    [
        "would you roll back checkout in shop?",
        "honestly, would you roll back payments in shop at this point?",
        "would you roll back checkout in shop or wait for the hotfix?",
    ],
)
def test_a_bare_would_you_asks_what_the_bot_would_do(text: str) -> None:
    assert not speech.write_mood(text).asks_for_write
    assert speech.write_mood("would you mind rolling back checkout in shop?").asks_for_write


@pytest.mark.parametrize(
    "text",
    [
        "alice asked: would you restart cart in shop? I said no.",
        "bob said: restart cart in shop. is that needed?",
        "the runbook says: restart cart in shop when it's stuck",
        "My manager told me: restart cart in shop. Please check its pods first",
    ],
)
def test_words_reported_after_a_colon_are_quoted(text: str) -> None:
    assert speech.write_mood(text) is speech.Mood.QUOTED


def test_a_quote_may_hold_an_apostrophe() -> None:
    said = "the runbook says 'restart cart in shop when it's stuck'"
    assert speech.write_mood(said) is speech.Mood.QUOTED
    # an apostrophe before a quote still opens none ("we're ... the comment 'planned'")
    said = "we're on it. please silence the postgres alerts with the comment 'planned'"
    assert speech.write_mood(said) is speech.Mood.IMPERATIVE


@pytest.mark.parametrize(
    "text",
    [
        "please take a look [FIRING:1] PodCrashLooping cart shop. Runbook restart cart in shop",
        "FYI [FIRING:1] PodCrashLooping (cart shop) restart cart in shop",
        "any idea? [FIRING:1] KubeHpaMaxedOut cart shop. scale cart to 10 replicas",
    ],
)
def test_a_pasted_alert_anywhere_is_quoted_from_where_it_starts(text: str) -> None:
    assert speech.write_mood(text) is speech.Mood.QUOTED


def test_what_a_pasted_alert_reports_stays_a_report() -> None:
    said = "thoughts? [RESOLVED] HighErrorRate checkout shop. Action taken: rolled back checkout"
    assert speech.write_mood(said) is speech.Mood.REPORT


def test_every_write_idiom_of_the_lexicon_is_a_write_word_of_speech() -> None:
    """By construction (speech.WRITE_IDIOMS): the lexicon never maps words to a write that
    the mood does not see, so a question in them is a question."""
    writes = {k for k, v in lexicon.SYNONYMS.items() if v in lexicon.WRITE_WORDS}
    assert writes, "the lexicon names writes"
    for key in writes:
        words = [w if w != "*" else "it" for w in key.split() if w != "$"]
        assert speech.write_mood(" ".join(words) + " for cart?") is not speech.Mood.NONE, key
    # and each target is a keyword of a write skill
    keywords = {ex.stem(k.lstrip("=")) for s in REGISTRY if s.name in WRITES for k in s.keywords}
    assert {ex.stem(w) for w in lexicon.WRITE_WORDS} <= keywords


@pytest.mark.parametrize(
    "text",
    [
        "off and on again for cart in shop?",
        "force a new deployment of billing in shop?",
        "is turning cart in shop off and on again safe?",
    ],
)
async def test_a_question_in_a_write_idiom_plans_no_write(text: str) -> None:
    assert (await routed(text))[0] not in WRITES


async def test_an_order_in_a_write_idiom_is_still_an_order() -> None:
    assert (await routed("turn cart in shop off and on again"))[0] == "k8s.restart"
    assert (await routed("force a new deployment of billing in shop"))[0] == "k8s.restart"


async def test_a_question_with_no_write_word_never_plans_a_write() -> None:
    """A write's keyword on top ('previous version' of k8s.rollback) does not make a question
    with no write word an order: it is ranked among the reads (here none answers it, so
    nothing runs)."""
    catalog = [s for s in REGISTRY if s.name != "k8s.rollout.history"]
    for text in ("what was the previous version of checkout in shop?", "prev version of cart?"):
        said = Request(actor=Actor(id="shell:alice"), channel="test", text=text)
        invocation = first_invocation(await OfflineRouter().plan(said, catalog))
        assert invocation is None or invocation.skill not in WRITES, (text, invocation)
    assert speech.is_question("what was the previous version of checkout")
    assert not speech.is_question("roll back checkout to the previous version")


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        (
            "checkout in shop is fine. could you restart it in staging?",
            "k8s.restart",
            {"name": "checkout", "namespace": "staging"},
        ),
        (
            "payments in shop is fine. could you show me its logs in staging?",
            "k8s.logs",
            {"name": "payments", "namespace": "staging"},
        ),
        (  # no namespace in the asking sentence: the context's
            "the kafka statefulset in data is wedged. could you restart it?",
            "k8s.restart",
            {"name": "kafka", "namespace": "data"},
        ),
    ],
)
async def test_a_sentence_pointing_back_with_it_keeps_the_namespace_it_says(
    text: str, skill: str, args: dict[str, object]
) -> None:
    got, found = await routed(text)
    assert got == skill and args.items() <= found.items(), (got, found)


async def test_a_previous_version_asked_about_is_the_history() -> None:
    got, found = await routed("what was the prev version of checkout in shop?")
    assert got == "k8s.rollout.history" and found.get("name") == "checkout", (got, found)
    assert (await routed("go back to the previous version of checkout in shop"))[0] == (
        "k8s.rollback"
    )


@pytest.mark.parametrize(
    ("text", "skill", "args"),
    [
        ("describe deployment hist in shop", "k8s.describe", {"name": "hist", "namespace": "shop"}),
        ("scale reps in shop to 3", "k8s.scale", {"name": "reps", "namespace": "shop"}),
        # not placed as a name: still the word it shortens
        ("rollout hist auth-gw identity ns", "k8s.rollout.history", {"name": "auth-gw"}),
        ("evnts in payments last 1h", "k8s.events", {"namespace": "payments"}),
    ],
)
async def test_a_short_form_placed_as_a_name_is_a_name(
    text: str, skill: str, args: dict[str, object]
) -> None:
    got, found = await routed(text)
    assert got == skill and args.items() <= found.items(), (got, found)


async def test_a_vowel_dropped_name_before_a_kind_is_no_skill_word() -> None:
    """'strt' is 'saturation' with its vowels dropped; before 'service' it names one."""
    assert (await routed("show me the strt service in shop"))[0] != "prometheus.query"
    assert "strt" in ex.placed_names("show me the strt service in shop")
    assert ex.shortened("strt") and ex.shortened("hist") and not ex.shortened("cart")


@pytest.mark.parametrize(
    ("text", "skill"),
    [
        ("which versions of checkout in shop were released?", "k8s.rollout.history"),
        ("what got released for cart in shop", "k8s.rollout.history"),
        ("has the new version of cart in shop gone out?", "k8s.rollout.status"),
        # (the dev phrasings the narrower entries copied)
        ("which versions of cart in shop have been released before?", "k8s.rollout.history"),
        ("did my new version of cart in shop finish going out?", "k8s.rollout.status"),
    ],
)
async def test_released_and_gone_out_are_said_in_any_tense(text: str, skill: str) -> None:
    assert (await routed(text))[0] == skill


async def test_what_a_workload_printed_is_its_logs_in_any_tense() -> None:
    got, found = await routed("what did cart in shop print before it died?")
    assert got == "k8s.logs" and found.get("name") == "cart", (got, found)
    assert (await routed("what is payments in shop printing"))[0] == "k8s.logs"
