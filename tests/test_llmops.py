"""LLMOps governance of the model path (issue 12, items 4 and 5): the prompts are versioned
template files, every model call is an ``llm.call`` audit record (model, parameters, template
hashes, tools offered, tokens, cost, latency), OpenTelemetry GenAI spans (in-memory exporter,
and OTLP/HTTP to a local receiver), and the eval's record-then-replay with no model server.

The model is the scripted OpenAI-compatible server (tests/fakes/openai_server.py) reached by
the real openai SDK and LangChain; the cluster is kmock.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import threading
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from kmock import KubernetesEmulator
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from typer.testing import CliRunner

from opsbot.audit import AuditEvent
from opsbot.cli import app
from opsbot.engine import Engine
from opsbot.evaluation import Case, Expect, evaluate
from opsbot.intent import otel
from opsbot.intent.llm import LLMPlanner
from opsbot.intent.llmops import ModelCall
from opsbot.intent.offline import OfflineRouter
from opsbot.intent.recording import Recording, ReplayMismatch, ReplayModel, Taped
from opsbot.intent.templates import Prompts, package_folder
from opsbot.model import Actor, Request
from opsbot.services import Services
from tests.conftest import ROOT, Thread
from tests.fakes.kube import ClusterEmulator
from tests.fakes.openai_server import FakeOpenAI, call, reply, status
from tests.test_llm import make_services

pytestmark = pytest.mark.kmock(cls=ClusterEmulator)

ALICE = Actor(id="shell:alice")
PROMPTS = ROOT / "bot" / "intent" / "prompts"


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
async def model() -> AsyncIterator[FakeOpenAI]:
    async with FakeOpenAI() as server:
        yield server


@pytest.fixture
async def services(
    kmock: KubernetesEmulator, tmp_path: Path, model: FakeOpenAI
) -> AsyncIterator[Services]:
    svc = await make_services(kmock, tmp_path, model)
    yield svc
    await svc.close()


async def ask(planner: LLMPlanner, text: str) -> Thread:
    out = Thread()
    await Engine(planner.services, planner=planner).handle(
        Request(actor=ALICE, channel="ops", text=text), out
    )
    return out


# -- templates ---------------------------------------------------------------------------


def test_the_prompts_are_package_files_and_their_version_is_the_files_hash() -> None:
    prompts = Prompts()
    assert prompts.system.sha256 == file_sha256(PROMPTS / "system.md.j2")
    assert prompts.tools.sha256 == file_sha256(PROMPTS / "tools.json.j2")
    assert prompts.system.version == f"system.md.j2@{prompts.system.sha256[:12]}"
    assert prompts.system_prompt().startswith("You are opsbot, an SRE assistant")
    assert "{#" not in prompts.system_prompt()  # the template's comment is not sent
    assert Path(str(package_folder())) == PROMPTS
    import opsbot.intent.llm as llm

    assert not hasattr(llm, "SYSTEM")  # no string constant left in the planner


def test_a_changed_template_is_a_new_version(tmp_path: Path) -> None:
    folder = tmp_path / "prompts"
    shutil.copytree(PROMPTS, folder)
    before = Prompts(folder)
    assert before.versions() == Prompts().versions()
    system = folder / "system.md.j2"
    system.write_text(system.read_text().replace("at most 8 lines", "at most 5 lines"))
    after = Prompts(folder)
    assert after.system.sha256 == file_sha256(system) != before.system.sha256
    assert after.tools.sha256 == before.tools.sha256
    assert "at most 5 lines" in after.system_prompt()
    tools = folder / "tools.json.j2"
    tools.write_text(
        tools.read_text().replace('" [" ~ skill.risk ~ "]"', '" (" ~ skill.risk ~ ")"')
    )
    from opsbot.skills.base import load_registry

    [restart] = [s for s in load_registry() if s.name == "k8s.restart"]
    [definition] = Prompts(folder).tool_definitions([restart])
    assert definition["function"]["description"].endswith("(write)")
    assert Prompts(folder).tools.sha256 != before.tools.sha256


# -- the audit record of every model call -------------------------------------------------


async def test_every_model_call_is_audited_with_model_params_templates_tools_tokens_cost(
    services: Services, model: FakeOpenAI
) -> None:
    model.script(
        reply(None, call("k8s__pods", {"namespace": "shop"}), prompt_tokens=900),
        reply("checkout-bbb-2 crash-loops.", prompt_tokens=1200, completion_tokens=15),
    )
    planner = LLMPlanner(services, fallback=OfflineRouter())
    thread = await ask(planner, "anything wrong with the pods in shop?")
    assert "checkout-bbb-2 crash-loops." in thread.text
    first, second = await services.audit.search(event=AuditEvent.LLM_CALL)
    offered = [t["function"]["name"] for t in model.completions[0]["tools"]]
    for record, step in ((first, 1), (second, 2)):
        args = record.args
        assert record.outcome == "ok" and record.actor == "shell:alice" and args["step"] == step
        assert (args["provider"], args["model"]) == ("openai", "gpt-4o-mini")
        assert args["endpoint"] == model.base_url.removesuffix("/v1")
        assert args["params"]["temperature"] == 0.0
        assert (args["params"]["timeout_s"], args["params"]["retries"]) == (2.0, 2)
        assert args["prompt_template"] == "system.md.j2"
        assert args["prompt_sha256"] == file_sha256(PROMPTS / "system.md.j2")
        assert args["tools_sha256"] == file_sha256(PROMPTS / "tools.json.j2")
        assert args["tools"] == offered and "k8s__pods" in offered
        assert args["latency_s"] > 0 and args["cost_usd"] > 0
        assert args["response_model"] == "gpt-4o-mini" and args["response_id"]
    assert (first.args["prompt_tokens"], first.args["completion_tokens"]) == (900, 20)
    assert (second.args["prompt_tokens"], second.args["completion_tokens"]) == (1200, 15)
    assert first.args["cost_usd"] == pytest.approx((900 * 0.15 + 20 * 0.6) / 1e6)
    assert (first.args["finish_reason"], first.args["tool_calls"]) == ("tool_calls", ["k8s__pods"])
    assert (second.args["finish_reason"], second.args["tool_calls"]) == ("stop", [])
    assert (first.args["messages"], second.args["messages"]) == (2, 4)
    assert first.args["input_sha256"] != second.args["input_sha256"]
    assert first.request_id == second.request_id and first.request_id
    assert "gpt-4o-mini call 1 with prompt system.md.j2@" in first.detail
    assert "called k8s__pods" in first.detail
    # the request's summary record names the templates too
    [usage] = await services.audit.search(event=AuditEvent.LLM_USAGE)
    assert usage.args["calls"] == 2
    assert usage.args["prompt_sha256"] == first.args["prompt_sha256"]
    assert (await services.audit.verify()).ok


async def test_a_failed_call_is_audited_too(services: Services, model: FakeOpenAI) -> None:
    model.script(status(429, 0.01), status(429, 0.01), status(429, 0.01))
    planner = LLMPlanner(services, fallback=OfflineRouter())
    thread = await ask(planner, "show pods in shop")
    assert "the offline router answered instead" in thread.text
    [failed] = await services.audit.search(event=AuditEvent.LLM_CALL)
    assert failed.outcome == "error"
    assert failed.args["error"] == "rate limited (429)"
    assert failed.args["error_type"] == "429"
    assert failed.args["prompt_tokens"] == 0 and failed.args["tools"]
    assert "failed: rate limited (429)" in failed.detail


async def test_a_changed_template_reaches_the_model_and_the_audit_record(
    services: Services, model: FakeOpenAI, tmp_path: Path
) -> None:
    folder = tmp_path / "prompts"
    shutil.copytree(PROMPTS, folder)
    system = folder / "system.md.j2"
    system.write_text(system.read_text().replace("You are opsbot", "You are opsbot (variant B)"))
    model.script(reply("hello"))
    planner = LLMPlanner(services, fallback=OfflineRouter(), prompts=Prompts(folder))
    await ask(planner, "hi")
    sent = model.completions[0]["messages"][0]
    assert sent["role"] == "system" and sent["content"].startswith("You are opsbot (variant B)")
    [record] = await services.audit.search(event=AuditEvent.LLM_CALL)
    assert record.args["prompt_sha256"] == file_sha256(system)
    assert record.args["prompt_sha256"] != file_sha256(PROMPTS / "system.md.j2")


# -- OpenTelemetry ------------------------------------------------------------------------


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


async def test_model_calls_are_genai_spans(
    services: Services,
    model: FakeOpenAI,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    model.script(
        reply(None, call("k8s__pods", {"namespace": "shop"}), prompt_tokens=900),
        reply("all good", prompt_tokens=1100, completion_tokens=7),
    )
    planner = LLMPlanner(services, fallback=OfflineRouter(), tracer_provider=provider)
    await ask(planner, "pods in shop?")
    first, second = exporter.get_finished_spans()
    port = int(model.base_url.split(":")[2].split("/")[0])
    for span in (first, second):
        attrs = dict(span.attributes or {})
        assert span.name == "chat gpt-4o-mini" and span.kind is SpanKind.CLIENT
        assert attrs["gen_ai.operation.name"] == "chat"
        assert attrs["gen_ai.provider.name"] == "openai" == attrs["gen_ai.system"]
        assert attrs["gen_ai.request.model"] == "gpt-4o-mini"
        assert attrs["gen_ai.request.temperature"] == 0.0
        assert attrs["gen_ai.response.model"] == "gpt-4o-mini"
        assert str(attrs["gen_ai.response.id"]).startswith("chatcmpl-")
        assert (attrs["server.address"], attrs["server.port"]) == ("127.0.0.1", port)
        assert attrs["opsbot.prompt.system.sha256"] == file_sha256(PROMPTS / "system.md.j2")
        assert "k8s__pods" in tuple(attrs["opsbot.llm.tools"])  # type: ignore[arg-type]
        assert span.end_time is not None and span.start_time is not None
        assert span.end_time > span.start_time
    a, b = dict(first.attributes or {}), dict(second.attributes or {})
    assert (a["gen_ai.usage.input_tokens"], a["gen_ai.usage.output_tokens"]) == (900, 20)
    assert (b["gen_ai.usage.input_tokens"], b["gen_ai.usage.output_tokens"]) == (1100, 7)
    assert a["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert b["gen_ai.response.finish_reasons"] == ("stop",)
    assert a["gen_ai.conversation.id"] == b["gen_ai.conversation.id"]
    assert "error.type" not in a


async def test_a_failed_call_is_an_error_span(
    services: Services,
    model: FakeOpenAI,
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    model.script(status(500), status(500), status(500))
    planner = LLMPlanner(services, fallback=OfflineRouter(), tracer_provider=provider)
    await ask(planner, "pods in shop?")
    [span] = exporter.get_finished_spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.status.description == "server error"
    assert dict(span.attributes or {})["error.type"] == "500"


def test_otlp_export_reaches_a_collector(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    received: list[bytes] = []

    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(self.rfile.read(int(self.headers["Content-Length"])))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            f"http://127.0.0.1:{server.server_address[1]}/v1/traces",
        )
        provider = otel.otlp_provider()
        otel.GenAISpans(provider)(
            ModelCall(
                request_id="r1",
                actor="shell:alice",
                channel="ops",
                thread="T1",
                step=1,
                provider="azure_openai",
                model="gpt-4o",
                endpoint="https://example.openai.azure.com",
                params={"temperature": 0.0, "max_tokens": 512},
                templates=Prompts().versions(),
                tools=["k8s__pods"],
                messages=2,
                input_sha256="0" * 64,
                started=1_700_000_000.0,
                latency_s=0.5,
                prompt_tokens=10,
                completion_tokens=3,
                response_model="gpt-4o-2024-08-06",
                finish_reason="stop",
            )
        )
        assert provider.force_flush(5000)
        provider.shutdown()
    finally:
        server.shutdown()
    [body] = received
    export = ExportTraceServiceRequest.FromString(body)
    [resource_spans] = export.resource_spans
    resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
    assert resource["service.name"] == "opsbot"
    [span] = resource_spans.scope_spans[0].spans
    attrs = {a.key: a.value for a in span.attributes}
    assert span.name == "chat gpt-4o"
    assert attrs["gen_ai.provider.name"].string_value == "azure.ai.openai"
    assert attrs["gen_ai.request.max_tokens"].int_value == 512
    assert attrs["gen_ai.usage.input_tokens"].int_value == 10
    assert attrs["server.address"].string_value == "example.openai.azure.com"
    assert attrs["server.port"].int_value == 443
    assert span.end_time_unix_nano - span.start_time_unix_nano == 500_000_000


def test_no_spans_without_an_endpoint_or_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in otel.ENDPOINT_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert otel.spans_from_environment() is None  # no provider set, nowhere to export
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("OTEL_SDK_DISABLED", "true")
    assert otel.spans_from_environment() is None


# -- record, then replay offline ----------------------------------------------------------

DATASET = (
    "- text: restart checkout in shop\n"
    "  expect: {skill: k8s.restart, args: {name: checkout, namespace: shop}}\n"
    "- text: is the checkout rollout done in shop\n"
    "  expect: {skill: k8s.rollout.status, args: {name: checkout, namespace: shop}}\n"
    "- text: pods in shop\n"
    "  expect: {skill: k8s.pods, args: {namespace: shop}}\n"
    "- text: tell me a joke\n  expect: {skill: null}\n"
)


def test_record_then_replay_with_no_server(
    kmock: KubernetesEmulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = tmp_path / "set.yaml"
    dataset.write_text(DATASET)
    tape = tmp_path / "answers.json"
    loop = asyncio.new_event_loop()
    server = FakeOpenAI()
    ready = threading.Event()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(server.__aenter__())
        ready.set()
        loop.run_forever()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    ready.wait(5)
    server.script(
        reply("pong"),  # the start-up check, not recorded
        reply(None, call("k8s__restart", {"name": "checkout", "namespace": "shop"})),
        # malformed JSON first: the planner returns the error and the model calls again
        reply(None, call("k8s__rollout__status", '{"name": "checkout", namespace: shop}')),
        reply(
            None,
            call("k8s__rollout__status", {"name": "checkout", "namespace": "shop"}),
            prompt_tokens=1500,
            completion_tokens=25,
        ),
        status(429, 0.01),
        status(429, 0.01),
        status(429, 0.01),  # pods in shop: the model stays rate limited, the router answers
        reply("Why did the pod cross the road?", prompt_tokens=800, completion_tokens=12),
    )
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.setenv("OPSBOT_LLM_MODEL", "gpt-4o-mini")
    monkeypatch.setenv("OPSBOT_POLICY_PATH", str(ROOT / "policies"))
    monkeypatch.chdir(tmp_path)
    try:
        recorded = CliRunner().invoke(
            app, ["eval", str(dataset), "--planner", "llm", "--record", str(tape), "--json"]
        )
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
    assert recorded.exit_code == 0, recorded.output
    first = json.loads(recorded.output[recorded.output.index("{\n") :])  # after a log line
    assert first["passed"] == 4, first["misses"]
    calls = [c["calls"] for c in first["per_case"]]
    assert calls == [1, 2, 0, 1]  # the rate-limited case counts no answered call
    assert [c["prompt_tokens"] for c in first["per_case"]][1] > 1500
    # the file
    data = json.loads(tape.read_text())
    assert data["format"] == "opsbot-llm-recording/1" and data["model"] == "gpt-4o-mini"
    assert data["templates"]["system"]["sha256"] == file_sha256(PROMPTS / "system.md.j2")
    assert data["params"]["temperature"] == 0.0
    assert [len(c["responses"]) for c in data["cases"]] == [1, 2, 1, 1]
    malformed = data["cases"][1]["responses"][0]["tool_calls"][0]
    assert malformed["arguments"] == '{"name": "checkout", namespace: shop}'  # as sent
    assert data["cases"][2]["responses"][0] == {
        "error": "rate limited (429)",
        "error_type": "429",
    }
    # replay: no server anywhere (the base URL points at a closed port)
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    monkeypatch.delenv("OPSBOT_LLM_MODEL")
    replayed = CliRunner().invoke(
        app, ["eval", str(dataset), "--planner", "llm", "--replay", str(tape), "--json"]
    )
    assert replayed.exit_code == 0, replayed.output
    second = json.loads(replayed.output[replayed.output.index("{\n") :])
    assert [(c["routed"], c["ok"]) for c in second["per_case"]] == [
        (c["routed"], c["ok"]) for c in first["per_case"]
    ]
    assert [c["calls"] for c in second["per_case"]] == calls
    for key in ("prompt_tokens", "completion_tokens", "cost_usd"):
        assert [c[key] for c in second["per_case"]] == [c[key] for c in first["per_case"]]
    assert second["notes"][0].startswith("replay: 4 recorded case(s) of gpt-4o-mini")
    # the text report: a line per case with calls and tokens, the accuracy last
    text = CliRunner().invoke(
        app, ["eval", str(dataset), "--planner", "llm", "--replay", str(tape)]
    )
    lines = text.output.strip().splitlines()
    assert lines[-1] == "accuracy: 1.000 (4/4)"
    assert any("  2 ok   2 call(s), " in line for line in lines), lines


async def test_replay_runs_the_planners_validation_and_reports_what_the_tape_lacks(
    services: Services, tmp_path: Path
) -> None:
    def response(name: str, arguments: str) -> dict[str, Any]:
        return {
            "content": "",
            "tool_calls": [{"id": "c1", "name": name, "arguments": arguments}],
            "prompt_tokens": 100,
            "completion_tokens": 10,
        }

    recording = Recording(
        {
            "model": "gpt-4o-mini",
            "provider": "openai",
            "cases": [
                {  # an invalid call (namespace missing) and nothing after it on the tape
                    "actor": "shell:alice",
                    "text": "status of checkout",
                    "responses": [response("k8s__rollout__status", '{"name": "checkout"}')],
                },
                {  # a name nothing has: grounding refuses it, the planner asks again
                    "actor": "shell:alice",
                    "text": "restart nginx in shop",
                    "responses": [
                        response("k8s__restart", '{"name": "nginx", "namespace": "shop"}'),
                        response("k8s__restart", '{"name": "checkout", "namespace": "shop"}'),
                    ],
                },
            ],
        },
        replaying=True,
    )
    path = tmp_path / "tape.json"
    recording.save(path)
    loaded = Recording.load(path)
    planner = LLMPlanner(services, fallback=OfflineRouter(), model=ReplayModel.of(loaded))
    cases = [
        Case(text="status of checkout", expect=Expect(skill="k8s.rollout.status")),
        Case(text="restart nginx in shop", expect=Expect(skill="k8s.restart")),
        Case(text="never recorded", expect=Expect(skill=None)),
    ]
    report = await evaluate(
        cases, Taped(planner, loaded), services.registry, case_errors=(ReplayMismatch,)
    )
    status_case, restart, missing = report.results
    assert not status_case.ok
    assert status_case.reason == (
        "ReplayMismatch: the planner asked for model response 2; 1 were recorded for this case"
    )
    assert restart.ok and restart.args == {"name": "checkout", "namespace": "shop"}
    assert restart.calls == 2 and restart.prompt_tokens == 200
    assert missing.reason == "ReplayMismatch: the recording has no responses for this case"
    with pytest.raises(ValueError, match="not a recording"):
        Recording.load(tmp_path / "nothing.json")
    (tmp_path / "other.json").write_text('{"cases": []}')
    with pytest.raises(ValueError, match="no 'format: opsbot-llm-recording/1'"):
        Recording.load(tmp_path / "other.json")


def test_replay_says_when_the_prompt_changed_since_the_recording(tmp_path: Path) -> None:
    recording = Recording(
        {"templates": {"system": {"template": "system.md.j2", "sha256": "a" * 64}}},
        replaying=True,
    )
    [note] = recording.drift(Prompts().versions())
    assert note.startswith("system.md.j2 changed since the recording (aaaaaaaaaaaa -> ")
    assert recording.drift({"system": {"template": "system.md.j2", "sha256": "a" * 64}}) == []


def test_record_and_replay_need_the_llm_planner(tmp_path: Path) -> None:
    dataset = tmp_path / "set.yaml"
    dataset.write_text(DATASET)
    result = CliRunner().invoke(app, ["eval", str(dataset), "--record", str(tmp_path / "x.json")])
    assert result.exit_code == 64 and "--record and --replay go with --planner llm" in result.output
    bad = tmp_path / "bad.json"
    bad.write_text("[]")
    result = CliRunner().invoke(
        app, ["eval", str(dataset), "--planner", "llm", "--replay", str(bad)]
    )
    assert result.exit_code == 1 and "is not a recording" in result.output
