"""The fake Loki (tests/fakes/loki.py) is strict and correct: httpx against the running fake.

Every rejection answers Loki's own status and text (see the fake's docstring for sources);
results have Loki's documented shapes; filters, matchers, time windows, direction, limits,
metric evaluation, tenants, the proxy's auth and the slow/down switches behave as stated.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from tests.fakes.loki import (
    ERR_EMPTY_MATCHERS,
    NS,
    FakeLoki,
    format_value,
    parse_timestamp,
)

T0 = 1_767_225_600  # 2026-01-01T00:00:00Z, unix seconds
CHECKOUT = {"service": "checkout", "namespace": "shop", "pod": "checkout-1"}
PAYMENTS = {"service": "payments", "namespace": "shop"}
FRONTEND = {"service": "frontend", "namespace": "web"}
TLS = ssl.create_default_context()  # one for all clients: httpx builds one per client otherwise


def ns(seconds: float) -> int:
    return int((T0 + seconds) * NS)


def seed(loki: FakeLoki) -> None:
    loki.push(
        CHECKOUT,
        [
            (ns(10), "GET /cart 200"),
            (ns(20), "ERROR payment timeout"),
            (ns(30), "WARN slow query"),
            (ns(40), "ERROR db connection refused"),
            (ns(50), "GET /health 200"),
        ],
    )
    loki.push(PAYMENTS, [(ns(35), "INFO charged"), (ns(15), "ERROR card declined")])
    loki.push(FRONTEND, [(datetime.fromtimestamp(T0 + 25, UTC), "GET / 500")])


@pytest.fixture
async def loki() -> AsyncIterator[FakeLoki]:
    async with FakeLoki(now_ns=ns(60)) as fake:
        seed(fake)
        yield fake


@pytest.fixture
async def client(loki: FakeLoki) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=loki.url, timeout=5, verify=TLS) as http:
        yield http


WINDOW = {"start": str(ns(0)), "end": str(ns(60))}


async def query_range(client: httpx.AsyncClient, query: str, **params: Any) -> httpx.Response:
    return await client.get("/loki/api/v1/query_range", params={"query": query, **params})


async def streams(client: httpx.AsyncClient, query: str, **params: Any) -> list[dict[str, Any]]:
    response = await query_range(client, query, **{**WINDOW, **params})
    assert response.status_code == 200, response.text
    data = response.json()["data"]
    assert data["resultType"] == "streams"
    result: list[dict[str, Any]] = data["result"]
    return result


def lines(result: list[dict[str, Any]]) -> list[str]:
    return [line for stream in result for _, line in stream["values"]]


async def rejected(response: httpx.Response, status: int = 400) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("text/plain")
    return response.text


# -- endpoints and shapes --------------------------------------------------------------------


async def test_ready_buildinfo_unknown_paths_and_methods(client: httpx.AsyncClient) -> None:
    ready = await client.get("/ready")
    assert (ready.status_code, ready.text) == (200, "ready\n")
    info = (await client.get("/loki/api/v1/status/buildinfo")).json()
    assert info["version"] == "3.4.2"
    assert {"revision", "branch", "buildDate", "buildUser", "goVersion"} <= info.keys()
    missing = await client.get("/loki/api/v1/tail")
    assert (missing.status_code, missing.text) == (404, "404 page not found\n")
    assert (await client.delete("/loki/api/v1/query_range")).status_code == 405


async def test_streams_shape_sorted_by_labels_newest_first(client: httpx.AsyncClient) -> None:
    response = await query_range(client, '{namespace="shop"}', **WINDOW)
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert body["status"] == "success"
    assert body["data"]["resultType"] == "streams"
    assert body["data"]["stats"]["summary"]["totalEntriesReturned"] == 7
    assert body["data"]["result"] == [
        {
            "stream": CHECKOUT,
            "values": [
                [str(ns(50)), "GET /health 200"],
                [str(ns(40)), "ERROR db connection refused"],
                [str(ns(30)), "WARN slow query"],
                [str(ns(20)), "ERROR payment timeout"],
                [str(ns(10)), "GET /cart 200"],
            ],
        },
        {
            "stream": PAYMENTS,
            "values": [[str(ns(35)), "INFO charged"], [str(ns(15)), "ERROR card declined"]],
        },
    ]


async def test_limit_takes_the_newest_or_oldest_entries_across_streams(
    client: httpx.AsyncClient,
) -> None:
    backward = await streams(client, '{namespace="shop"}', limit=3)
    assert [(s["stream"]["service"], len(s["values"])) for s in backward] == [
        ("checkout", 2),
        ("payments", 1),
    ]
    assert lines(backward) == ["GET /health 200", "ERROR db connection refused", "INFO charged"]
    forward = await streams(client, '{namespace="shop"}', limit=2, direction="FORWARD")
    assert lines(forward) == ["GET /cart 200", "ERROR card declined"]
    everything = await streams(client, '{namespace=~".+"}', direction="forward")
    assert lines(everything)[:2] == ["GET /cart 200", "ERROR payment timeout"]


async def test_line_filters_chain(client: httpx.AsyncClient) -> None:
    query = '{namespace="shop"} |= "ERROR" != "card" |~ "(?i)DB|payment" !~ "time(out)?$"'
    assert lines(await streams(client, query)) == ["ERROR db connection refused"]
    assert lines(await streams(client, '{service="checkout"} |~ `\\d{3}$`')) == [
        "GET /health 200",
        "GET /cart 200",
    ]


async def test_regex_and_negative_matchers(client: httpx.AsyncClient) -> None:
    services = await streams(client, '{service=~"check.*|pay.*"}')
    assert [s["stream"]["service"] for s in services] == ["checkout", "payments"]
    not_payments = await streams(client, '{namespace="shop", service!~"pay.*"}')
    assert [s["stream"]["service"] for s in not_payments] == ["checkout"]
    without_pod = await streams(client, '{namespace=~".+", pod=""}')  # absent label = ""
    assert [s["stream"]["service"] for s in without_pod] == ["payments", "frontend"]
    assert await streams(client, '{service=~"check"}') == []  # regexes are fully anchored
    assert len(await streams(client, '{service=~".+", namespace!="web"}')) == 2


async def test_time_window_formats_start_inclusive_end_exclusive(
    client: httpx.AsyncClient,
) -> None:
    query = '{service="checkout"}'
    expected = ["WARN slow query", "ERROR payment timeout"]
    for start, end in (
        (str(ns(20)), str(ns(40))),  # nanoseconds
        ("2026-01-01T00:00:20Z", "2026-01-01T01:00:40+01:00"),  # RFC3339
        (str(T0 + 20), str(T0 + 40)),  # unix seconds (<= 10 digits)
        (f"{T0 + 20}.0", f"{T0 + 39}.9999"),  # float seconds, rounded to the millisecond
        ("2026-01-01T00:00:19.999999999Z", "2026-01-01T00:00:39.000000001Z"),
    ):
        assert lines(await streams(client, query, start=start, end=end)) == expected, start
    since = await query_range(client, query, since="25s", end=str(ns(60)))
    assert lines(since.json()["data"]["result"]) == [
        "GET /health 200",
        "ERROR db connection refused",
    ]
    default = await query_range(client, query)  # start = now - 1h, end = now
    assert len(lines(default.json()["data"]["result"])) == 5


# -- metric queries --------------------------------------------------------------------------


async def test_count_over_time_matrix_steps_and_windows(client: httpx.AsyncClient) -> None:
    query = 'count_over_time({service="checkout"} |= "ERROR" [30s])'
    response = await query_range(client, query, step="20s", **WINDOW)
    data = response.json()["data"]
    assert data["resultType"] == "matrix"
    # windows (t-30s, t] at t = 0 (empty: no point), 20, 40, 60
    assert data["result"] == [
        {"metric": CHECKOUT, "values": [[T0 + 20, "1"], [T0 + 40, "2"], [T0 + 60, "1"]]}
    ]
    filters_after_range = await query_range(
        client, 'count_over_time({service="checkout"}[30s] |= "ERROR")', step="20", **WINDOW
    )
    assert filters_after_range.json()["data"]["result"] == data["result"]


async def test_rate_and_sum_by_as_instant_and_range(client: httpx.AsyncClient) -> None:
    by_ns = 'sum by (namespace) (rate({namespace=~".+"} |= "ERROR" [1m]))'
    instant = await client.get("/loki/api/v1/query", params={"query": by_ns, "time": str(ns(60))})
    data = instant.json()["data"]
    assert data["resultType"] == "vector"
    assert data["result"] == [{"metric": {"namespace": "shop"}, "value": [T0 + 60, "0.05"]}]
    total = await client.get(
        "/loki/api/v1/query",
        params={"query": 'sum(count_over_time({namespace=~".+"}[1m]))', "time": f"{T0 + 59.5}"},
    )
    assert total.json()["data"]["result"] == [{"metric": {}, "value": [T0 + 59.5, "8"]}]
    postfix = 'sum(count_over_time({namespace=~".+"} != "GET" [10s])) by (service, pod)'
    matrix = (await query_range(client, postfix, step="10s", **WINDOW)).json()["data"]["result"]
    assert matrix == [
        {"metric": {"service": "checkout", "pod": "checkout-1"}, "values": [
            [T0 + 20, "1"], [T0 + 30, "1"], [T0 + 40, "1"]
        ]},
        {"metric": {"service": "payments"}, "values": [[T0 + 20, "1"], [T0 + 40, "1"]]},
    ]  # fmt: skip
    default_now = await client.get("/loki/api/v1/query", params={"query": by_ns})
    assert default_now.json()["data"]["result"][0]["value"] == [T0 + 60, "0.05"]


# -- rejections ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "error"),
    [
        ("", "parse error : syntax error: unexpected $end"),
        (
            '{service="checkout"',
            "parse error at line 1, col 20: syntax error: unexpected $end, expecting } or ,",
        ),
        (
            '{service "checkout"}',
            "parse error at line 1, col 10: syntax error: unexpected STRING, "
            "expecting = or =~ or !~ or !=",
        ),
        (
            "{service=checkout}",
            "parse error at line 1, col 10: syntax error: unexpected IDENTIFIER, expecting STRING",
        ),
        (
            "{=}",
            "parse error at line 1, col 2: syntax error: unexpected =, expecting IDENTIFIER or }",
        ),
        (
            '{service="checkout"} |= error',
            "parse error at line 1, col 25: syntax error: unexpected IDENTIFIER, "
            "expecting STRING or ip",
        ),
        (
            '{service="checkout"} "x"',
            "parse error at line 1, col 22: syntax error: unexpected STRING",
        ),
        (
            'unk({service="checkout"}[5m])',
            "parse error at line 1, col 1: syntax error: unexpected IDENTIFIER",
        ),
        (
            'rate({service="checkout"}[5minutes])',
            'parse error at line 0, col 26: unknown unit "minutes" in duration "5minutes"',
        ),
        (
            'rate({service="checkout"}[5m)',
            "parse error at line 0, col 26: missing closing ']' in duration",
        ),
        ('{service="checkout}', "parse error at line 1, col 10: literal not terminated"),
        ('rate({service="checkout"})', "parse error at line 1, col 26: syntax error: unexpected )"),
        (
            'rate({service="checkout"}[5m]',
            "parse error at line 1, col 30: syntax error: unexpected $end, expecting )",
        ),
        (
            'sum by (service (rate({service="checkout"}[5m]))',
            "parse error at line 1, col 17: syntax error: unexpected (, expecting , or )",
        ),
        (
            '{service="checkout"}\n  |= 5',
            "parse error at line 2, col 6: syntax error: unexpected NUMBER, expecting STRING or ip",
        ),
        (
            '{service="checkout"}[5m]',
            "parse error at line 0, col 21: syntax error: unexpected RANGE",
        ),
        (
            'count_over_time({service="checkout"}[5m]) by (pod)',
            "parse error : grouping not allowed for count_over_time aggregation",
        ),
        ('{service=~"("}', "parse error : error parsing regexp: missing closing ): `^(?s:()$`"),
        (
            '{service=~"(?=x)"}',
            "parse error : error parsing regexp: invalid or unsupported Perl syntax: `(?=`",
        ),
        ('{service="checkout"} |~ "("', "error parsing regexp: missing closing ): `(`"),
    ],
)
async def test_syntax_errors_answer_lokis_text(
    client: httpx.AsyncClient, query: str, error: str
) -> None:
    assert await rejected(await query_range(client, query, **WINDOW)) == error


@pytest.mark.parametrize(
    ("query", "feature"),
    [
        ('{service="checkout"} | json', "the `| json` stage"),
        ('{service="checkout"} | logfmt | level="error"', "the `| logfmt` stage"),
        ('{service="checkout"} | line_format "{{.msg}}"', "the `| line_format` stage"),
        ('{service="checkout"} | level="error"', "label filter expressions"),
        ('{service="checkout"} |= "a" or "b"', "`or` between line filters"),
        ('{service="checkout"} |> "<_> 200"', "pattern line filters (|>)"),
        ('{service="checkout"} |= ip("10.0.0.1")', "ip() line filters"),
        ('topk(3, rate({service="checkout"}[5m]))', "the topk() function"),
        ('avg_over_time({service="checkout"} | unwrap x [5m])', "the avg_over_time() function"),
        ('sum without (pod) (rate({service="checkout"}[5m]))', "`without` grouping"),
        ('rate({service="checkout"}[5m]) * 2', "binary operator *"),
        ('rate({service="checkout"}[5m] offset 1h)', "offset modifiers"),
        ('rate({service="checkout"} | unwrap latency [5m])', "unwrap"),
        ("vector(1)", "the vector() function"),
        ("42", "number literals"),
        ('(rate({service="checkout"}[5m]))', "parenthesised expressions"),
    ],
)
async def test_valid_logql_outside_the_subset_is_refused_as_the_fake(
    client: httpx.AsyncClient, query: str, feature: str
) -> None:
    text = await rejected(await query_range(client, query, **WINDOW))
    assert text.startswith(
        f"unsupported by the fake Loki (tests/fakes/loki.py): {feature} at line 1"
    )


@pytest.mark.parametrize(
    "query", ["{}", '{service=~".*"}', '{service!="checkout"}', '{pod=""}', '{a!~"b|c"}']
)
async def test_selectors_without_a_non_empty_matcher_are_rejected(
    client: httpx.AsyncClient, query: str
) -> None:
    text = await rejected(await query_range(client, query, **WINDOW))
    assert text == f"parse error : {ERR_EMPTY_MATCHERS}"
    assert 'app=~".*" does not meet this requirement, but app=~".+" will' in text


async def test_request_parameter_errors(client: httpx.AsyncClient) -> None:
    selector = '{service="checkout"}'
    metric = f"count_over_time({selector}[1m])"
    cases: list[tuple[str, dict[str, str], str]] = [
        (
            selector,
            {"limit": "5001"},
            "max entries limit per query exceeded, limit > max_entries_limit_per_query "
            "(5001 > 5000)",
        ),
        (selector, {"limit": "0"}, "limit must be a positive value"),
        (selector, {"limit": "ten"}, 'strconv.Atoi: parsing "ten": invalid syntax'),
        (selector, {"direction": "sideways"}, "invalid direction 'sideways'"),
        (
            selector,
            {"start": str(ns(30)), "end": str(ns(20))},
            "end timestamp must not be before or equal to start time",
        ),
        (
            selector,
            {"start": "yesterday"},
            "could not parse 'start' parameter: strconv.ParseInt: parsing \"yesterday\": "
            "invalid syntax",
        ),
        (
            selector,
            {"since": "1hour"},
            'could not parse \'since\' parameter: unknown unit "hour" in duration "1hour"',
        ),
        (
            metric,
            {"start": str(ns(0)), "end": str(ns(11_001)), "step": "1"},
            "exceeded maximum resolution of 11,000 points per time series. Try increasing the "
            "value of the step parameter",
        ),
        (
            metric,
            {"step": "0"},
            "zero or negative query resolution step widths are not accepted. Try a positive "
            "integer",
        ),
        (metric, {"step": "soon"}, 'cannot parse "soon" to a valid duration'),
    ]
    for query, params, error in cases:
        assert await rejected(await query_range(client, query, **params)) == error, params
    # the entries limit does not apply to metric queries; 11,000 points is still allowed
    ok = await query_range(
        client, metric, limit="6000", start=str(ns(0)), end=str(ns(11_000)), step="1"
    )
    assert ok.status_code == 200, ok.text
    same_instant = await query_range(client, selector, start=str(ns(20)), end=str(ns(20)))
    assert same_instant.status_code == 200


async def test_instant_log_queries_are_rejected(client: httpx.AsyncClient) -> None:
    response = await client.get("/loki/api/v1/query", params={"query": '{service="checkout"}'})
    assert await rejected(response) == (
        "log queries are not supported as an instant query type, please change your query "
        "to a range query type"
    )
    bad_time = await client.get("/loki/api/v1/query", params={"query": "x", "time": "noon"})
    assert await rejected(bad_time) == 'strconv.ParseInt: parsing "noon": invalid syntax'


async def test_post_form_is_accepted_and_wins_over_url_parameters(
    client: httpx.AsyncClient, loki: FakeLoki
) -> None:
    response = await client.post(
        "/loki/api/v1/query_range",
        params={"query": "not logql"},
        data={"query": '{service="payments"}', **WINDOW, "direction": "forward"},
    )
    assert lines(response.json()["data"]["result"]) == ["ERROR card declined", "INFO charged"]
    instant = await client.post(
        "/loki/api/v1/query",
        data={"query": 'count_over_time({service="payments"}[1h])', "time": str(ns(60))},
    )
    assert instant.json()["data"]["result"][0]["value"] == [T0 + 60, "2"]
    assert loki.queries("/query_range")[-1] == '{service="payments"}'


# -- label endpoints -------------------------------------------------------------------------


async def test_label_names_and_values(client: httpx.AsyncClient) -> None:
    names = await client.get("/loki/api/v1/labels", params=WINDOW)
    assert names.json() == {"status": "success", "data": ["namespace", "pod", "service"]}
    values = await client.get("/loki/api/v1/label/service/values")  # default: the last hour
    assert values.json()["data"] == ["checkout", "frontend", "payments"]
    shop = await client.get(
        "/loki/api/v1/label/service/values", params={"query": '{namespace="shop"}', **WINDOW}
    )
    assert shop.json()["data"] == ["checkout", "payments"]
    late = {"start": str(ns(51)), "end": str(ns(60))}
    assert (await client.get("/loki/api/v1/labels", params=late)).json() == {"status": "success"}
    assert (await client.get("/loki/api/v1/label/nope/values")).json() == {"status": "success"}
    pipeline = await client.get(
        "/loki/api/v1/labels", params={"query": '{namespace="shop"} |= "x"'}
    )
    assert await rejected(pipeline) == "only label matchers are supported"
    empty = await client.get("/loki/api/v1/labels", params={"query": '{service=~".*"}'})
    assert await rejected(empty) == f"parse error : {ERR_EMPTY_MATCHERS}"


# -- tenants, auth, slow and down ------------------------------------------------------------


async def test_tenants_need_an_org_id_and_see_only_their_streams() -> None:
    async with FakeLoki(auth_enabled=True, now_ns=ns(60)) as loki:
        loki.push({"service": "a"}, [(ns(10), "from team a")], tenant="team-a")
        loki.push({"service": "b"}, [(ns(10), "from team b")], tenant="team-b")
        async with httpx.AsyncClient(base_url=loki.url, verify=TLS) as http:
            query = {"query": '{service=~".+"}', **WINDOW}
            missing = await http.get("/loki/api/v1/query_range", params=query)
            assert await rejected(missing, 401) == "no org id\n"
            labels = await http.get("/loki/api/v1/labels")
            assert await rejected(labels, 401) == "no org id\n"
            team_a = await http.get(
                "/loki/api/v1/query_range", params=query, headers={"X-Scope-OrgID": "team-a"}
            )
            assert lines(team_a.json()["data"]["result"]) == ["from team a"]
            values = await http.get(
                "/loki/api/v1/label/service/values", headers={"X-Scope-OrgID": "team-b"}
            )
            assert values.json()["data"] == ["b"]
            assert (await http.get("/ready")).status_code == 200
            assert loki.requests[-3].headers["X-Scope-OrgID"] == "team-a"


async def test_proxy_bearer_and_basic_auth() -> None:
    query = {"query": 'count_over_time({service="checkout"}[1h])', "time": str(ns(60))}
    async with FakeLoki(bearer_token="s3cret", now_ns=ns(60)) as loki:
        seed(loki)
        async with httpx.AsyncClient(base_url=loki.url, verify=TLS) as http:
            none = await http.get("/loki/api/v1/query", params=query)
            assert await rejected(none, 401) == "401 Unauthorized\n"
            assert none.headers["www-authenticate"] == 'Bearer realm="loki"'
            wrong = await http.get(
                "/loki/api/v1/query", params=query, headers={"Authorization": "Bearer nope"}
            )
            assert wrong.status_code == 401
            right = await http.get(
                "/loki/api/v1/query", params=query, headers={"Authorization": "Bearer s3cret"}
            )
            assert right.json()["data"]["result"][0]["value"][1] == "5"
    async with (
        FakeLoki(basic_auth=("loki", "pw"), now_ns=ns(60)) as loki,
        httpx.AsyncClient(base_url=loki.url, verify=TLS) as http,
    ):
        bad = await http.get("/loki/api/v1/labels", auth=("loki", "wrong"))
        assert bad.status_code == 401
        assert bad.headers["www-authenticate"] == 'Basic realm="loki"'
        good = await http.get("/loki/api/v1/labels", auth=("loki", "pw"))
        assert good.json() == {"status": "success"}


async def test_slow_and_down(client: httpx.AsyncClient, loki: FakeLoki) -> None:
    loki.delay = 5.0  # the server's close ends the slow answer; the test does not wait 5 s
    with pytest.raises(httpx.ReadTimeout):
        await client.get("/ready", timeout=0.2)
    loki.delay = 0.0
    loki.fail_with = 503
    down = await client.get("/loki/api/v1/labels")
    assert (down.status_code, down.text) == (503, "503 Service Unavailable\n")
    loki.fail_with = None
    assert (await client.get("/ready")).status_code == 200
    assert [r.path for r in loki.requests] == ["/ready", "/loki/api/v1/labels", "/ready"]


# -- helpers ---------------------------------------------------------------------------------


def test_value_and_timestamp_formats() -> None:
    assert [format_value(v) for v in (1.0, 0.05, 1e-05, 2.5e21, float("inf"))] == [
        "1",
        "0.05",
        "0.00001",
        "2500000000000000000000",
        "+Inf",
    ]
    assert parse_timestamp("1767225600", 0) == T0 * NS
    assert parse_timestamp("1767225600123456789", 0) == T0 * NS + 123456789
    assert parse_timestamp("1767225600.1236", 0) == T0 * NS + 124_000_000
    assert parse_timestamp("2026-01-01T00:00:00.5-01:00", 0) == (T0 + 3600) * NS + NS // 2
    assert parse_timestamp("", 7) == 7


def test_push_validates_streams() -> None:
    loki = FakeLoki()
    with pytest.raises(ValueError):
        loki.push({}, [(1, "x")])
    with pytest.raises(ValueError):
        loki.push({"bad-name": "x"}, [(1, "x")])
    with pytest.raises(ValueError):
        loki.push({"a": "b"}, [(datetime(2026, 1, 1), "naive")])
