"""A strict fake of Grafana Loki's HTTP query API (no Loki server can be installed here).

Endpoints (https://grafana.com/docs/loki/latest/reference/loki-http-api/):

* ``GET|POST /loki/api/v1/query`` and ``/loki/api/v1/query_range`` (POST form bodies win over
  URL parameters, as Go's ``Request.ParseForm`` does), ``GET|POST /loki/api/v1/labels`` and
  ``/loki/api/v1/label/<name>/values``, ``GET /ready`` (``ready``) and
  ``GET /loki/api/v1/status/buildinfo`` (``version``, ``revision``, ...). Anything else: 404
  ``404 page not found``.
* Answers are Loki's JSON: ``{"status": "success", "data": {"resultType": "streams" | "matrix"
  | "vector", "result": [...], "stats": {...}}}``; streams carry ``[["<ns>", "line"], ...]``
  (newest first unless ``direction=forward``), matrices ``[[<unix s>, "<value>"], ...]`` with
  Go's float formatting. Label endpoints answer ``{"status": "success", "data": [...]}`` and,
  like Loki (``data`` is ``omitempty`` in ``pkg/loghttp/labels.go``), omit ``data`` when empty.
* Parameters as ``pkg/loghttp/params.go`` parses them: ``start``/``end``/``time`` as ns, unix
  seconds (<= 10 digits), float seconds or RFC3339(Nano); ``since`` (default 1h, the code's
  default also for the label endpoints, although the docs say 6h); ``limit`` (default 100);
  ``direction`` (backward default); ``step`` (seconds or a duration; default
  ``max(floor(range/250s), 1s)``). Log results hold entries with ``start <= ts < end``; a range
  aggregation at time ``t`` counts entries in ``(t - range, t]``; steps run from ``start`` to
  ``end`` inclusive; empty points are omitted, as Loki does.

LogQL: a real (small) lexer and recursive-descent parser that follows Loki's grammar
(``pkg/logql/syntax/syntax.y``) and lexer (``lex.go``, ``query_scanner.go``) closely enough
to answer syntax errors with Loki's own text and positions. Supported and evaluated:

* stream selectors with ``=``, ``!=``, ``=~``, ``!~`` (regexes fully anchored, RE2-style:
  look-arounds and back-references are rejected as Go's regexp rejects them);
* chained line filters ``|=``, ``!=``, ``|~``, ``!~``;
* ``count_over_time(<selector> <filters> [<range>])`` and ``rate(...)`` (filters may also
  follow the range), optionally wrapped (and nested) in ``sum(...)``,
  ``sum by (l, ...) (...)`` or ``sum(...) by (l, ...)``.

Rejected like Loki (HTTP 400, ``text/plain``, Loki's body; ``pkg/util/server/error.go``):

* syntax errors: ``parse error at line L, col C: syntax error: unexpected X[, expecting A or
  B]`` (``pkg/logqlmodel/error.go``); the "expecting" lists are those of the grammar's states,
  e.g. ``{app="x"`` -> ``... unexpected $end, expecting } or ,`` (``parser_test.go``),
  ``{a "x"}`` -> ``... expecting = or =~ or !~ or !=`` (grafana/loki#12132); an empty query
  -> ``parse error : syntax error: unexpected $end`` (grafana/grafana#21987). Two-character
  operators, ranges and durations report line 0, as Loki's scanner does after ``Next()``
  (``rate({a="b"}[5x])`` -> ``parse error at line 0, col 13: unknown unit "x" in duration
  "5x"``). ``literal not terminated``, ``missing closing ']' in duration`` likewise;
* ``parse error : queries require at least one regexp or equality matcher that does not have
  an empty-compatible value. For instance, app=~".*" does not meet this requirement, but
  app=~".+" will`` (``pkg/logql/syntax/parser.go``; troubleshooting guide
  https://grafana.com/docs/loki/latest/query/troubleshoot-query/);
* ``parse error : grouping not allowed for count_over_time aggregation`` (``ast.go``);
* ``parse error : error parsing regexp: ...`` for a bad label regex (text approximated from
  Go's regexp/syntax messages); a bad line-filter regex answers ``error parsing regexp: ...``;
* instant log queries: ``log queries are not supported as an instant query type, please
  change your query to a range query type`` (``pkg/logqlmodel/error.go``);
* ``max entries limit per query exceeded, limit > max_entries_limit_per_query (6000 > 5000)``
  (``pkg/util/validation/validate.go``; log queries only, as ``pkg/querier/http.go``);
* ``exceeded maximum resolution of 11,000 points per time series. Try increasing the value of
  the step parameter`` (Loki's text in ``pkg/loghttp/query.go``: not Prometheus's "Try
  decreasing the query resolution (?step=XX)"), ``zero or negative query resolution step
  widths are not accepted. Try a positive integer``, ``end timestamp must not be before or
  equal to start time``, ``limit must be a positive value``, ``invalid direction 'x'``,
  ``could not parse 'start' parameter: strconv.ParseInt: parsing "x": invalid syntax``,
  ``cannot parse "x" to a valid duration`` (``pkg/loghttp``);
* ``maximum number of series (500) reached for a single query; ...`` (``error.go``);
* ``only label matchers are supported`` for a label-endpoint ``query`` with a pipeline.

Valid LogQL outside the subset (parsers such as ``| json`` / ``| logfmt``, label filters,
``line_format``, ``unwrap``, ``offset``, pattern filters ``|>``, ``or`` between line filters,
``ip()``, binary operators, literals, ``without``, ``topk`` and every other function) is
answered with 400 and a message that starts ``unsupported by the fake Loki`` so that nobody
mistakes it for Loki's answer. The fake recognises such a feature at its first token and
does not parse the rest of it.

Multi-tenancy: with ``auth_enabled=True`` the query and label endpoints need
``X-Scope-OrgID`` (else 401 ``no org id``, dskit's ``middleware.AuthenticateUser``) and see
only that tenant's streams; without it every request is tenant ``fake``, as in Loki.
``bearer_token`` / ``basic_auth`` emulate an authenticating proxy in front of Loki (401
otherwise). ``delay`` (seconds) makes every answer slow, ``fail_with`` (a status) makes every
answer fail; ``requests`` records what was asked. Seed data with ``push``.
"""

from __future__ import annotations

import asyncio
import base64
import bisect
import contextlib
import hmac
import json
import math
import re
import time
import unicodedata
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from http import HTTPStatus
from typing import Any, Literal, NoReturn

from aiohttp import web

NS = 1_000_000_000
MAX_ENTRIES_LIMIT_PER_QUERY = 5000
MAX_QUERY_SERIES = 500
DEFAULT_TENANT = "fake"  # Loki's tenant when auth_enabled is false

ERR_EMPTY_MATCHERS = (
    "queries require at least one regexp or equality matcher that does not have an "
    'empty-compatible value. For instance, app=~".*" does not meet this requirement, but '
    'app=~".+" will'
)
ERR_INSTANT_LOG_QUERY = (
    "log queries are not supported as an instant query type, please change your query to a "
    "range query type"
)
ERR_END_BEFORE_START = "end timestamp must not be before or equal to start time"
ERR_ZERO_STEP = (
    "zero or negative query resolution step widths are not accepted. Try a positive integer"
)
ERR_STEP_TOO_SMALL = (
    "exceeded maximum resolution of 11,000 points per time series. Try increasing the value "
    "of the step parameter"
)
ERR_MAX_ENTRIES = (
    "max entries limit per query exceeded, limit > max_entries_limit_per_query ({} > {})"
)
ERR_MAX_SERIES = (
    "maximum number of series ({}) reached for a single query; consider reducing query "
    "cardinality by adding more specific stream selectors, reducing the time range, or "
    "aggregating results with functions like sum(), count() or topk()"
)
ERR_ONLY_MATCHERS = "only label matchers are supported"
ERR_NO_ORG_ID = "no org id"
SUPPORTED = (
    "it evaluates stream selectors (= != =~ !~), line filters (|= != |~ !~), "
    "count_over_time and rate, optionally inside sum [by (...)]"
)


# -- errors -------------------------------------------------------------------------------


class LokiHTTPError(Exception):
    """An error answered as Loki answers it: a status and a plain-text body."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


class LogQLParseError(LokiHTTPError):
    """``logqlmodel.ParseError``: ``parse error at line L, col C: msg`` or ``parse error : msg``."""

    def __init__(self, line: int, col: int, msg: str) -> None:
        if line == 0 and col == 0:
            text = f"parse error : {msg}"
        else:
            text = f"parse error at line {line}, col {col}: {msg}"
        super().__init__(400, text)
        self.line, self.col, self.msg = line, col, msg


class UnsupportedLogQL(LokiHTTPError):
    """Valid LogQL that this fake does not evaluate (never Loki's own answer)."""

    def __init__(self, line: int, col: int, feature: str) -> None:
        super().__init__(
            400,
            f"unsupported by the fake Loki (tests/fakes/loki.py): {feature} "
            f"at line {line}, col {col}; {SUPPORTED}",
        )
        self.feature = feature


def _bad_request(text: str) -> LokiHTTPError:
    return LokiHTTPError(400, text)


def _go_quote(value: str) -> str:
    """Close enough to Go's ``%q`` / ``strconv.Quote`` for error texts."""
    return json.dumps(value, ensure_ascii=False)


# -- durations, numbers, timestamps (Go and Prometheus semantics) -----------------------------

_PROM_UNITS = {
    "ms": (7, 1_000_000),
    "s": (6, NS),
    "m": (5, 60 * NS),
    "h": (4, 3600 * NS),
    "d": (3, 86400 * NS),
    "w": (2, 7 * 86400 * NS),
    "y": (1, 365 * 86400 * NS),
}


class _ValueError(Exception):
    """A Go-style error message from a parsing helper."""


def parse_prom_duration(text: str) -> int:
    """``model.ParseDuration`` (prometheus/common): nanoseconds, or ``_ValueError``."""
    if text == "0":
        return 0
    if text == "":
        raise _ValueError("empty duration string")
    invalid = f"not a valid duration string: {_go_quote(text)}"
    rest, total, last_pos = text, 0, 0
    while rest:
        digits = re.match(r"[0-9]*", rest)
        assert digits is not None
        if not digits.group():
            raise _ValueError(invalid)
        value = int(digits.group())
        rest = rest[digits.end() :]
        unit_match = re.match(r"[^0-9]*", rest)
        assert unit_match is not None
        unit = unit_match.group()
        if not unit:
            raise _ValueError(invalid)
        rest = rest[len(unit) :]
        if unit not in _PROM_UNITS:
            raise _ValueError(f"unknown unit {_go_quote(unit)} in duration {_go_quote(text)}")
        pos, mult = _PROM_UNITS[unit]
        if pos <= last_pos:
            raise _ValueError(invalid)
        last_pos = pos
        total += value * mult
        if total > 2**63 - 1:
            raise _ValueError("duration out of range")
    return total


_GO_DURATION = re.compile(r"[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+")


def _is_duration(text: str) -> bool:
    """Loki's lexer ``parseDuration``: Prometheus' syntax, else Go's ``time.ParseDuration``."""
    try:
        parse_prom_duration(text)
    except _ValueError:
        return text in ("0", "-0", "+0") or _GO_DURATION.fullmatch(text) is not None
    return True


_BYTES_UNITS = {"b", "", "k", "kb", "ki", "kib", "m", "mb", "mi", "mib", "g", "gb", "gi", "gib"}
_BYTES_UNITS |= {"t", "tb", "ti", "tib", "p", "pb", "pi", "pib"}


def _is_bytes(text: str) -> bool:
    """``humanize.ParseBytes`` as Loki's lexer uses it after a number."""
    match = re.fullmatch(r"([0-9.]+)(.*)", text)
    return match is not None and match.group(2).strip().lower() in _BYTES_UNITS


_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_FLOAT = re.compile(
    r"[+-]?(?:(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.IGNORECASE
)


def _go_int(fn: str, value: str, bits: int = 64) -> int:
    if not _GO_INT.fullmatch(value):
        raise _ValueError(f"{fn}: parsing {_go_quote(value)}: invalid syntax")
    number = int(value)
    if not -(2 ** (bits - 1)) <= number < 2 ** (bits - 1):
        raise _ValueError(f"{fn}: parsing {_go_quote(value)}: value out of range")
    return number


def _go_float(value: str) -> float | None:
    return float(value) if _GO_FLOAT.fullmatch(value) else None


_RFC3339 = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2}):(\d{2})(?:\.(\d{1,9}))?(Z|[+-]\d{2}:\d{2})"
)


def _parse_rfc3339(value: str) -> int | None:
    match = _RFC3339.fullmatch(value)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) for g in match.groups()[:6])
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError:
        return None
    ns = int(moment.timestamp()) * NS + int((match.group(7) or "").ljust(9, "0"))
    zone = match.group(8)
    if zone != "Z":
        sign = 1 if zone[0] == "+" else -1
        ns -= sign * (int(zone[1:3]) * 3600 + int(zone[4:6]) * 60) * NS
    return ns


def parse_timestamp(value: str, default: int) -> int:
    """``parseTimestamp`` of ``pkg/loghttp/params.go``: nanoseconds since the epoch."""
    if value == "":
        return default
    if "." in value:
        seconds = _go_float(value)
        if seconds is not None and math.isfinite(seconds):
            whole = math.trunc(seconds)
            frac = seconds - whole
            frac = math.copysign(math.floor(abs(frac) * 1000 + 0.5), frac) / 1000  # math.Round
            return whole * NS + int(frac * NS)
    try:
        number = _go_int("strconv.ParseInt", value)
    except _ValueError:
        parsed = _parse_rfc3339(value)
        if parsed is not None:
            return parsed
        raise
    return number * NS if len(value) <= 10 else number


def parse_seconds_or_duration(value: str) -> int:
    """``parseSecondsOrDuration`` (``step``, ``interval``): nanoseconds."""
    seconds = _go_float(value)
    if seconds is not None:
        if math.isnan(seconds):
            return -(2**63)
        ns = seconds * NS
        if ns > 2**63 - 1 or ns < -(2**63):
            raise _ValueError(
                f"cannot parse {_go_quote(value)} to a valid duration. It overflows int64"
            )
        return int(ns)
    try:
        return parse_prom_duration(value)
    except _ValueError:
        raise _ValueError(f"cannot parse {_go_quote(value)} to a valid duration") from None


def format_value(value: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``, as Prometheus' JSON writes samples."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    text = repr(value)
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text[:-2] if text.endswith(".0") else text


def _unix_seconds(ns: int) -> int | float:
    ms = ns // 1_000_000
    return ms // 1000 if ms % 1000 == 0 else ms / 1000


# -- regular expressions (Go's RE2 syntax, checked before Python compiles them) -------------

_PY_ERRORS = (
    ("missing ), unterminated subpattern", "missing closing )"),
    ("unbalanced parenthesis", "unexpected )"),
    ("unterminated character set", "missing closing ]"),
    ("nothing to repeat", "missing argument to repetition operator"),
    ("multiple repeat", "invalid nested repetition operator"),
    ("bad escape", "invalid escape sequence"),
    ("bad character range", "invalid character class range"),
)


def compile_go_regex(pattern: str, *, anchored: bool) -> re.Pattern[str]:
    """Compile a Go regexp; anchored like Prometheus' ``^(?s:...)$`` for label matchers."""
    shown = f"^(?s:{pattern})$" if anchored else pattern
    perl = re.search(r"\(\?(?:[=!]|<[=!]|>)", pattern)
    if perl:
        raise _ValueError(
            f"error parsing regexp: invalid or unsupported Perl syntax: `{perl.group()}`"
        )
    backref = re.search(r"(?<!\\)(?:\\\\)*(\\[1-9Z])", pattern)
    if backref:
        raise _ValueError(f"error parsing regexp: invalid escape sequence: `{backref.group(1)}`")
    translated = re.sub(r"(?<!\\)((?:\\\\)*)\\z", r"\1\\Z", pattern)
    try:
        return re.compile(translated, re.DOTALL if anchored else 0)
    except re.error as exc:
        message = str(exc).split(" at position")[0]
        code = next((go for py, go in _PY_ERRORS if message.startswith(py)), message)
        whole = code in ("missing closing )", "unexpected )")
        fragment = shown if whole else pattern[exc.pos or 0 :]
        raise _ValueError(f"error parsing regexp: {code}: `{fragment}`") from None


# -- lexer ---------------------------------------------------------------------------------

# Loki's ``tokens`` map (lex.go): the token names yacc prints are these very strings.
_TOKENS = {
    *(",", ".", "{", "}", "=", "!=", "=~", "!~", "!>", "|=", "|~", "|>", "|", "(", ")", "[", "]"),
    *("unwrap", "by", "without", "bool", "label_replace", "offset", "on", "ignoring"),
    *("group_left", "group_right", "or", "and", "unless", "+", "-", "*", "/", "%", "^"),
    *("==", ">", ">=", "<", "<="),
    *("json", "regexp", "logfmt", "unpack", "pattern", "line_format", "label_format"),
    *("ip", "decolorize", "drop", "keep"),
}
# Loki's ``functionTokens``: recognised only before ``(`` (or ``by (``, ``without (``).
_FUNCTIONS = {
    name: name.upper()
    for name in (
        "rate",
        "rate_counter",
        "count_over_time",
        "bytes_rate",
        "bytes_over_time",
        "avg_over_time",
        "sum_over_time",
        "min_over_time",
        "max_over_time",
        "stdvar_over_time",
        "stddev_over_time",
        "quantile_over_time",
        "first_over_time",
        "last_over_time",
        "absent_over_time",
        "vector",
        "sum",
        "avg",
        "max",
        "min",
        "count",
        "stddev",
        "stdvar",
        "bottomk",
        "topk",
        "sort",
        "sort_desc",
        "approx_topk",
    )
}
_FUNCTIONS |= {
    "label_replace": "label_replace",
    "ip": "ip",
    "bytes": "BYTES_CONV",
    "duration": "DURATION_CONV",
    "duration_seconds": "DURATION_SECONDS_CONV",
}
_VALID_FUNCTIONS = {k for k in _FUNCTIONS.values() if k not in ("ip",) and "_CONV" not in k}
_PARSER_FLAGS = {"--strict", "--keep-empty"}
_BINOPS = {"or", "and", "unless", "+", "-", "*", "/", "%", "^", "==", "!=", ">", ">=", "<", "<="}
_STAGES = {"json", "logfmt", "regexp", "unpack", "pattern", "line_format", "label_format"}
_STAGES |= {"decolorize", "drop", "keep"}
_WHITESPACE = " \t\r\n"  # text/scanner's GoWhitespace: nothing else is skipped
_DURATION_RUNES = set("nuµmshdwy")
_NUMBER = re.compile(  # text/scanner's numbers: hex, binary, octal, decimal and floats
    r"0[xX][0-9a-fA-F_]+|0[bB][01_]+|0[oO][0-7_]+|"
    r"(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9][0-9_]*)(?:[eE][+-]?[0-9_]+)?"
)
_BYTES_RUNES = set("BikKMGTP")


@dataclass(frozen=True)
class Token:
    kind: str  # the name Loki's parser prints: "IDENTIFIER", "STRING", "$end", "{", "SUM"...
    text: str
    value: str
    line: int  # as Loki reports it: 0 for tokens its lexer finished with Scanner.Next()
    col: int
    real_line: int


class _Lexer:
    def __init__(self, src: str) -> None:
        self.src = src
        self.pos = 0
        self.lines: list[int] = []
        self.cols: list[int] = []
        line, col = 1, 0
        for char in src:
            col += 1
            self.lines.append(line)
            self.cols.append(col)
            if char == "\n":
                line, col = line + 1, 0
        self.eof = (0, 0) if not src else (line, col + 1)

    def _error(self, start: int, msg: str, *, line0: bool = False) -> NoReturn:
        raise LogQLParseError(0 if line0 else self.lines[start], self.cols[start], msg)

    def _token(
        self, kind: str, start: int, end: int, value: str = "", *, line0: bool = False
    ) -> Token:
        self.pos = end
        line = self.lines[start]
        return Token(kind, self.src[start:end], value, 0 if line0 else line, self.cols[start], line)

    def _skip(self) -> None:
        src, n = self.src, len(self.src)
        while self.pos < n:
            char = src[self.pos]
            if char in _WHITESPACE:
                self.pos += 1
            elif char == "#" or src.startswith("//", self.pos):
                while self.pos < n and src[self.pos] != "\n":
                    self.pos += 1
            elif src.startswith("/*", self.pos):
                close = src.find("*/", self.pos + 2)
                if close < 0:
                    self._error(self.pos, "comment not terminated")
                self.pos = close + 2
            else:
                return

    def next(self) -> Token:
        self._skip()
        src, start = self.src, self.pos
        if start >= len(src):
            line, col = self.eof
            return Token("$end", "", "", line, col, line)
        char = src[start]
        following = src[start + 1] if start + 1 < len(src) else ""
        if (char.isdigit() and char.isascii()) or (char == "." and following.isdigit()):
            return self._number(start)
        if char == "-" and following == "-":  # tryScanFlag: letters and dashes
            end = start + 1
            while end < len(src) and (src[end].isalpha() or src[end] == "-"):
                end += 1
            if src[start:end] in _PARSER_FLAGS:
                return self._token("FUNCTION_FLAG", start, end, line0=True)
        if char == "-":
            end = self._suffix(start + 1, _DURATION_RUNES)
            if end > start + 1 and _is_duration(src[start:end]):
                return self._token("DURATION", start, end, line0=True)
        if char == '"':
            return self._string(start)
        if char == "`":
            close = src.find("`", start + 1)
            if close < 0:
                self._error(start, "literal not terminated")
            return self._token("STRING", start, close + 1, src[start + 1 : close].replace("\r", ""))
        if char == "'":
            return self._char(start)
        if char == "[":
            return self._range(start)
        if char == "_" or char.isalpha():
            end = start + 1
            while end < len(src) and (
                src[end] == "_" or src[end].isalpha() or src[end].isdecimal()
            ):
                end += 1
            text = src[start:end]
            lower = text.lower()
            if lower in _FUNCTIONS:
                kind = _FUNCTIONS[lower] if _is_function(src[end:]) else "IDENTIFIER"
                return self._token(kind, start, end, text)
            return self._token(lower if lower in _TOKENS else "IDENTIFIER", start, end, text)
        if following and char + following in _TOKENS:
            return self._token(char + following, start, start + 2, line0=True)
        return self._token(char if char in _TOKENS else "IDENTIFIER", start, start + 1, char)

    def _suffix(self, pos: int, runes: set[str]) -> int:
        """Loki's tryScanDuration/tryScanBytes: digits, unit runes and dots up to a space."""
        src = self.src
        while pos < len(src) and not src[pos].isspace():
            if not (src[pos] in runes or src[pos] == "." or unicodedata.category(src[pos]) == "Nd"):
                break
            pos += 1
        return pos

    def _number(self, start: int) -> Token:
        src = self.src
        match = _NUMBER.match(src, start)
        assert match is not None
        end = match.end()
        for runes, kind, check in (
            (_DURATION_RUNES, "DURATION", _is_duration),
            (_BYTES_RUNES, "BYTES", _is_bytes),
        ):
            stop = self._suffix(end, runes)
            if stop > end and check(src[start:stop]):
                return self._token(kind, start, stop, src[start:stop], line0=True)
        return self._token("NUMBER", start, end, src[start:end])

    def _string(self, start: int) -> Token:
        src, pos = self.src, start + 1
        out: list[str] = []
        while True:
            if pos >= len(src) or src[pos] == "\n":
                self._error(start, "literal not terminated")
            char = src[pos]
            if char == '"':
                return self._token("STRING", start, pos + 1, "".join(out))
            if char != "\\":
                out.append(char)
                pos += 1
                continue
            escape = src[pos + 1] if pos + 1 < len(src) else ""
            simple = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
            simple |= {"v": "\v", "\\": "\\", '"': '"'}
            if escape in simple:
                out.append(simple[escape])
                pos += 2
                continue
            digits = {"x": (16, 2, 2), "u": (16, 4, 2), "U": (16, 8, 2)}.get(escape)
            if escape in "01234567" and escape:
                digits = (8, 3, 1)
            if digits is None:
                self._error(start, "invalid char escape")
            base, count, skip = digits
            body = src[pos + skip : pos + skip + count]
            allowed = "01234567" if base == 8 else "0123456789abcdefABCDEF"
            if len(body) != count or any(c not in allowed for c in body):
                self._error(start, "invalid char escape")
            code = int(body, base)
            if (base == 8 and code > 255) or code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                self._error(start, "invalid syntax")
            out.append(chr(code))
            pos += skip + count

    def _char(self, start: int) -> Token:
        src = self.src
        close = start + 1
        while close < len(src) and src[close] not in "'\n":
            close += 2 if src[close] == "\\" else 1
        if close >= len(src) or src[close] != "'":
            self._error(start, "literal not terminated")
        body = src[start + 1 : close]
        if len(body) != 1 and not (body.startswith("\\") and len(body) == 2):
            self._error(start, "invalid char literal")
        return self._token("IDENTIFIER", start, close + 1, src[start : close + 1])

    def _range(self, start: int) -> Token:
        close = self.src.find("]", start + 1)
        if close < 0:
            self._error(start, "missing closing ']' in duration", line0=True)
        try:
            duration = parse_prom_duration(self.src[start + 1 : close])
        except _ValueError as exc:
            self._error(start, str(exc), line0=True)
        return self._token("RANGE", start, close + 1, str(duration), line0=True)


def _is_function(rest: str) -> bool:
    """Loki's ``isFunction``: the next runes are ``(``, ``by (`` or ``without (``."""
    rest = rest.lstrip()
    if rest.startswith("("):
        return True
    for word in ("by", "without"):
        if rest[: len(word)].lower() == word:
            return rest[len(word) :].lstrip().startswith("(")
    return False


# -- AST -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Matcher:
    name: str
    op: Literal["=", "!=", "=~", "!~"]
    value: str
    regex: re.Pattern[str] | None = None

    def matches(self, value: str) -> bool:
        if self.op == "=":
            return value == self.value
        if self.op == "!=":
            return value != self.value
        assert self.regex is not None
        found = self.regex.fullmatch(value) is not None
        return found if self.op == "=~" else not found


@dataclass(frozen=True)
class LineFilter:
    op: Literal["|=", "!=", "|~", "!~"]
    text: str
    regex: re.Pattern[str] | None = None

    def keeps(self, line: str) -> bool:
        if self.op in ("|=", "!="):
            return (self.text in line) == (self.op == "|=")
        assert self.regex is not None
        return (self.regex.search(line) is not None) == (self.op == "|~")


@dataclass(frozen=True)
class LogQuery:
    matchers: tuple[Matcher, ...]
    filters: tuple[LineFilter, ...] = ()


@dataclass(frozen=True)
class RangeAggregation:
    op: Literal["count_over_time", "rate"]
    query: LogQuery
    range_ns: int


@dataclass(frozen=True)
class SumAggregation:
    by: tuple[str, ...] | None  # None: sum over everything
    inner: MetricExpr


MetricExpr = RangeAggregation | SumAggregation
Expr = LogQuery | MetricExpr


# -- parser ----------------------------------------------------------------------------------


class _Parser:
    def __init__(self, src: str) -> None:
        self.lexer = _Lexer(src)
        self.ahead: Token | None = None
        self.semantic: list[str] = []  # Loki's post-parse validation errors, in order
        self.execution: list[str] = []  # errors Loki meets when it builds the pipeline
        self.selectors: list[tuple[Matcher, ...]] = []

    def peek(self) -> Token:
        if self.ahead is None:
            self.ahead = self.lexer.next()
        return self.ahead

    def next(self) -> Token:
        token = self.peek()
        self.ahead = None
        return token

    @staticmethod
    def fail(token: Token, *expecting: str) -> NoReturn:
        msg = f"syntax error: unexpected {token.kind}"
        if expecting:
            msg += ", expecting " + " or ".join(expecting)
        raise LogQLParseError(token.line, token.col, msg)

    @staticmethod
    def unsupported(token: Token, feature: str) -> NoReturn:
        raise UnsupportedLogQL(token.real_line, token.col, feature)

    def parse(self) -> Expr:
        expr = self.expression()
        end = self.peek()
        if end.kind in _BINOPS:
            self.unsupported(end, f"binary operator {end.kind}")
        if end.kind != "$end":
            self.fail(end)
        for msg in self.semantic:
            raise LogQLParseError(0, 0, msg)
        for matchers in self.selectors:
            if not any(not m.matches("") for m in matchers):
                raise LogQLParseError(0, 0, ERR_EMPTY_MATCHERS)
        for msg in self.execution:
            raise _bad_request(msg)
        return expr

    def expression(self) -> Expr:
        token = self.peek()
        if token.kind == "{":
            return self.log_query()
        return self.metric(token)

    def metric(self, token: Token) -> MetricExpr:
        kind = token.kind
        if kind in ("COUNT_OVER_TIME", "RATE"):
            return self.range_aggregation()
        if kind == "SUM":
            return self.sum_aggregation()
        if kind in _VALID_FUNCTIONS:
            self.unsupported(token, f"the {token.text}() function")
        if kind == "(":
            self.unsupported(token, "parenthesised expressions")
        if kind == "NUMBER":
            self.unsupported(token, "number literals")
        if kind in ("+", "-"):
            self.next()
            if self.peek().kind == "NUMBER":
                self.unsupported(token, "number literals")
            self.fail(self.peek(), "NUMBER")
        self.fail(token)

    def log_query(self) -> LogQuery:
        return LogQuery(self.selector(), self.pipeline())

    def selector(self) -> tuple[Matcher, ...]:
        self.next()  # {
        matchers: list[Matcher] = []
        token = self.next()
        if token.kind == "}":
            self.selectors.append(())
            return ()
        while True:
            if token.kind != "IDENTIFIER":
                self.fail(token, *(("IDENTIFIER",) if matchers else ("IDENTIFIER", "}")))
            op = self.next()
            if op.kind not in ("=", "!=", "=~", "!~"):
                self.fail(op, "=", "=~", "!~", "!=")
            value = self.next()
            if value.kind != "STRING":
                self.fail(value, "STRING")
            matchers.append(self.matcher(token.text, op.kind, value.value))
            token = self.next()
            if token.kind == "}":
                self.selectors.append(tuple(matchers))
                return tuple(matchers)
            if token.kind != ",":
                self.fail(token, "}", ",")
            token = self.next()

    @staticmethod
    def matcher(name: str, op: str, value: str) -> Matcher:
        if op in ("=", "!="):
            return Matcher(name, "=" if op == "=" else "!=", value)
        try:
            regex = compile_go_regex(value, anchored=True)
        except _ValueError as exc:  # labels.NewMatcher's error, panicked as a ParseError
            raise LogQLParseError(0, 0, str(exc)) from None
        return Matcher(name, "=~" if op == "=~" else "!~", value, regex)

    def pipeline(self) -> tuple[LineFilter, ...]:
        filters: list[LineFilter] = []
        while True:
            token = self.peek()
            kind = token.kind
            if kind in ("|=", "!=", "|~", "!~"):
                self.next()
                arg = self.next()
                if arg.kind == "ip":
                    self.unsupported(arg, "ip() line filters")
                if arg.kind != "STRING":
                    self.fail(arg, "STRING", "ip")
                filters.append(self.line_filter(kind, arg.value))
                if self.peek().kind == "or":
                    self.unsupported(self.peek(), "`or` between line filters")
            elif kind in ("|>", "!>"):
                self.unsupported(token, f"pattern line filters ({kind})")
            elif kind == "|":
                self.next()
                stage = self.peek()
                if stage.kind in _STAGES:
                    self.unsupported(stage, f"the `| {stage.text}` stage")
                if stage.kind == "unwrap":
                    self.unsupported(stage, "unwrap")
                if stage.kind in ("IDENTIFIER", "("):
                    self.unsupported(stage, "label filter expressions")
                self.fail(stage)
            else:
                return tuple(filters)

    def line_filter(self, op: str, text: str) -> LineFilter:
        if op == "|=":
            return LineFilter("|=", text)
        if op == "!=":
            return LineFilter("!=", text)
        try:
            regex = compile_go_regex(text, anchored=False)
        except _ValueError as exc:
            self.execution.append(str(exc))
            regex = re.compile("")
        return LineFilter("|~" if op == "|~" else "!~", text, regex)

    def range_aggregation(self) -> RangeAggregation:
        op = self.next()
        open_ = self.next()
        if open_.kind != "(":
            self.fail(open_, "(")
        token = self.peek()
        if token.kind == "NUMBER":
            self.unsupported(token, f"a parameter to {op.text}()")
        if token.kind == "(":
            self.unsupported(token, "parenthesised log range expressions")
        if token.kind != "{":
            self.fail(token, "NUMBER", "{", "(")
        matchers = self.selector()
        filters = self.pipeline()
        range_ = self.next()
        if range_.kind != "RANGE":
            self.fail(range_)
        if self.peek().kind == "offset":
            self.unsupported(self.peek(), "offset modifiers")
        if not filters:
            filters = self.pipeline()
        close = self.next()
        if close.kind != ")":
            self.fail(close, ")")
        name: Literal["count_over_time", "rate"] = (
            "rate" if op.kind == "RATE" else "count_over_time"
        )
        if self.peek().kind in ("by", "without"):
            self.grouping()
            self.semantic.append(f"grouping not allowed for {name} aggregation")
        return RangeAggregation(name, LogQuery(matchers, filters), int(range_.value))

    def grouping(self) -> tuple[str, ...]:
        keyword = self.next()
        if keyword.kind == "without":
            self.unsupported(keyword, "`without` grouping")
        open_ = self.next()
        if open_.kind != "(":
            self.fail(open_, "(")
        labels: list[str] = []
        token = self.next()
        if token.kind == ")":
            return ()
        while True:
            if token.kind != "IDENTIFIER":
                self.fail(token, *(("IDENTIFIER",) if labels else ("IDENTIFIER", ")")))
            labels.append(token.text)
            token = self.next()
            if token.kind == ")":
                return tuple(labels)
            if token.kind != ",":
                self.fail(token, ",", ")")
            token = self.next()

    def sum_aggregation(self) -> SumAggregation:
        self.next()  # sum
        by = self.grouping() if self.peek().kind in ("by", "without") else None
        open_ = self.next()
        if open_.kind != "(":
            self.fail(open_, "(")
        token = self.peek()
        if token.kind == "NUMBER":
            self.unsupported(token, "a parameter to sum()")
        if token.kind == "{":
            self.log_query()
            after = self.peek()
            if after.kind in _BINOPS:
                self.unsupported(after, f"binary operator {after.kind}")
            self.fail(after)
        inner = self.metric(token)
        close = self.next()
        if close.kind in _BINOPS:
            self.unsupported(close, f"binary operator {close.kind}")
        if close.kind != ")":
            self.fail(close)
        if by is None and self.peek().kind in ("by", "without"):
            by = self.grouping()
        return SumAggregation(by, inner)


def parse_logql(query: str) -> Expr:
    """Parse a query of the supported subset or raise Loki's (or the fake's) 400 error."""
    return _Parser(query).parse()


# -- storage and evaluation ----------------------------------------------------------------


def labels_string(labels: Mapping[str, str]) -> str:
    """Prometheus ``Labels.String()``: ``{a="1", b="2"}``, the order Loki sorts streams in."""
    return "{" + ", ".join(f"{k}={_go_quote(labels[k])}" for k in sorted(labels)) + "}"


@dataclass
class _Stream:
    labels: dict[str, str]
    entries: list[tuple[int, str]] = field(default_factory=list)

    @property
    def timestamps(self) -> list[int]:
        return [ts for ts, _ in self.entries]


@dataclass
class _Stats:
    lines: int = 0
    bytes: int = 0
    returned: int = 0
    started: float = field(default_factory=time.perf_counter)

    def scanned(self, entries: Iterable[tuple[int, str]]) -> None:
        for _, line in entries:
            self.lines += 1
            self.bytes += len(line.encode())

    def json(self) -> dict[str, Any]:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        zero_chunk = {
            "compressedBytes": 0,
            "decompressedBytes": 0,
            "decompressedLines": 0,
            "decompressedStructuredMetadataBytes": 0,
            "headChunkBytes": self.bytes,
            "headChunkLines": self.lines,
            "headChunkStructuredMetadataBytes": 0,
            "postFilterLines": self.returned,
            "totalDuplicates": 0,
        }
        store = {
            "totalChunksRef": 0,
            "totalChunksDownloaded": 0,
            "chunksDownloadTime": 0,
            "queryReferencedStructuredMetadata": False,
            "chunk": zero_chunk,
        }
        return {
            "summary": {
                "bytesProcessedPerSecond": int(self.bytes / elapsed),
                "linesProcessedPerSecond": int(self.lines / elapsed),
                "totalBytesProcessed": self.bytes,
                "totalLinesProcessed": self.lines,
                "execTime": elapsed,
                "queueTime": 0,
                "subqueries": 0,
                "totalEntriesReturned": self.returned,
                "splits": 0,
                "shards": 0,
                "totalPostFilterLines": self.returned,
                "totalStructuredMetadataBytesProcessed": 0,
            },
            "querier": {"store": store},
            "ingester": {
                "totalReached": 1,
                "totalChunksMatched": 0,
                "totalBatches": 1,
                "totalLinesSent": self.returned,
                "store": store,
            },
        }


Series = tuple[dict[str, str], dict[int, float]]


def _sort_key(labels: Mapping[str, str]) -> list[tuple[str, str]]:
    return sorted(labels.items())


# -- the server ----------------------------------------------------------------------------

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
Form = dict[str, list[str]]
FORM = web.RequestKey("form", Form)


@dataclass
class RecordedRequest:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]


LabelSet = Mapping[str, str]
Entry = tuple[int | datetime, str]


@dataclass
class FakeLoki:
    auth_enabled: bool = False
    bearer_token: str | None = None
    basic_auth: tuple[str, str] | None = None
    version: str = "3.4.2"
    max_entries_limit_per_query: int = MAX_ENTRIES_LIMIT_PER_QUERY
    max_query_series: int = MAX_QUERY_SERIES
    delay: float = 0.0
    fail_with: int | None = None
    fail_body: str | None = None
    now_ns: int | None = None  # "now" for default time bounds; None: the wall clock
    requests: list[RecordedRequest] = field(default_factory=list)
    url: str = ""
    _tenants: dict[str, dict[str, _Stream]] = field(default_factory=dict)
    _runner: web.AppRunner | None = None
    _closing: asyncio.Event = field(default_factory=asyncio.Event)

    # -- test API ------------------------------------------------------------------------

    def push(
        self, labels: LabelSet, entries: Iterable[Entry], *, tenant: str = DEFAULT_TENANT
    ) -> None:
        """Add log lines to the stream with these labels (timestamps in ns or aware datetimes)."""
        if not labels:
            raise ValueError("a stream needs at least one label")
        for name, value in labels.items():
            if not re.fullmatch(r"[a-zA-Z_][a-zA-Z0-9_]*", name) or not value:
                raise ValueError(f"invalid label {name}={value!r}")
        streams = self._tenants.setdefault(tenant, {})
        key = labels_string(labels)
        stream = streams.setdefault(key, _Stream(dict(labels)))
        known = set(stream.entries)
        for ts, line in entries:
            ns = ts if isinstance(ts, int) else _datetime_ns(ts)
            if (ns, line) not in known:
                known.add((ns, line))
                stream.entries.append((ns, line))
        stream.entries.sort(key=lambda entry: entry[0])

    def clear(self) -> None:
        self._tenants.clear()
        self.requests.clear()

    def queries(self, path_suffix: str = "") -> list[str]:
        """The LogQL queries received (optionally only on paths ending with path_suffix)."""
        return [
            r.params["query"]
            for r in self.requests
            if "query" in r.params and r.path.endswith(path_suffix)
        ]

    # -- lifecycle -----------------------------------------------------------------------

    async def __aenter__(self) -> FakeLoki:
        fake = self
        self._closing = asyncio.Event()

        @web.middleware
        async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
            return await fake._around(request, handler)

        app = web.Application(middlewares=[middleware])
        read = ("GET", "POST")
        for path, methods, handler in (
            ("/loki/api/v1/query", read, self._query),
            ("/loki/api/v1/query_range", read, self._query_range),
            ("/loki/api/v1/labels", read, self._labels),
            ("/loki/api/v1/label/{name}/values", read, self._label_values),
            ("/ready", ("GET",), self._ready),
            ("/loki/api/v1/status/buildinfo", ("GET",), self._buildinfo),
        ):
            app.router.add_route("*", path, _only(methods, handler))
        app.router.add_route("*", "/{tail:.*}", self._not_found)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._closing.set()  # slow answers in flight end now
        if self._runner:
            await self._runner.cleanup()
            self._runner = None

    # -- plumbing ------------------------------------------------------------------------

    async def _around(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        form = await _form(request)
        request[FORM] = form
        self.requests.append(
            RecordedRequest(
                request.method,
                request.path,
                {k: v[0] for k, v in form.items()},
                dict(request.headers),
            )
        )
        if self.delay:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closing.wait(), timeout=self.delay)
        if self.fail_with is not None:
            try:
                phrase = HTTPStatus(self.fail_with).phrase
            except ValueError:
                phrase = "Error"
            return _text(self.fail_with, self.fail_body or f"{self.fail_with} {phrase}\n")
        if not self._proxy_allows(request.headers.get("Authorization", "")):
            scheme = "Bearer" if self.bearer_token else "Basic"
            response = _text(401, "401 Unauthorized\n")
            response.headers["WWW-Authenticate"] = f'{scheme} realm="loki"'
            return response
        try:
            result: web.StreamResponse = await handler(request)
        except LokiHTTPError as exc:
            return _text(exc.status, exc.text)
        return result

    def _proxy_allows(self, header: str) -> bool:
        if self.bearer_token is None and self.basic_auth is None:
            return True
        scheme, _, credentials = header.partition(" ")
        if self.bearer_token is not None and scheme.lower() == "bearer":
            return hmac.compare_digest(credentials.encode(), self.bearer_token.encode())
        if self.basic_auth is not None and scheme.lower() == "basic":
            expected = base64.b64encode(":".join(self.basic_auth).encode()).decode()
            return hmac.compare_digest(credentials.encode(), expected.encode())
        return False

    def _now(self) -> int:
        return self.now_ns if self.now_ns is not None else time.time_ns()

    def _streams(self, request: web.Request) -> list[_Stream]:
        if not self.auth_enabled:
            tenant = DEFAULT_TENANT
        else:
            tenant = request.headers.get("X-Scope-OrgID", "")
            if not tenant:
                raise LokiHTTPError(401, ERR_NO_ORG_ID + "\n")
            if "|" in tenant:
                raise UnsupportedLogQL(0, 0, "multi-tenant queries (X-Scope-OrgID a|b)")
        return list(self._tenants.get(tenant, {}).values())

    # -- handlers ------------------------------------------------------------------------

    async def _not_found(self, request: web.Request) -> web.Response:
        return _text(404, "404 page not found\n")

    async def _ready(self, request: web.Request) -> web.Response:
        return _text(200, "ready\n")

    async def _buildinfo(self, request: web.Request) -> web.Response:
        return _json(
            {
                "version": self.version,
                "revision": "fa1ce0000000",
                "branch": "HEAD",
                "buildUser": "root@fake",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.24.0",
            }
        )

    async def _query_range(self, request: web.Request) -> web.Response:
        form = request[FORM]
        streams = self._streams(request)
        start, end = self._bounds(form)
        if end < start:
            raise _bad_request(ERR_END_BEFORE_START)
        limit = _limit(form)
        forward = _direction(form)
        step = _step(form, start, end)
        if step <= 0:
            raise _bad_request(ERR_ZERO_STEP)
        if (end - start) // step > 11000:
            raise _bad_request(ERR_STEP_TOO_SMALL)
        interval = _get(form, "interval")
        if interval:
            interval_ns = _wrap(lambda: parse_seconds_or_duration(interval))
            if interval_ns < 0:
                raise _bad_request("interval must be >= 0")
            if interval_ns > 0:
                raise UnsupportedLogQL(0, 0, "the interval parameter")
        expr = parse_logql(_get(form, "query"))
        stats = _Stats()
        if isinstance(expr, LogQuery):
            self._check_limit(limit)
            result: list[dict[str, Any]] = self._log_result(
                streams, expr, start, end, limit, forward, stats
            )
            return _result("streams", result, stats)
        steps = list(range(start, end + 1, step))
        series = self._metric(streams, expr, steps, stats)
        if len(series) > self.max_query_series:
            raise _bad_request(ERR_MAX_SERIES.format(self.max_query_series))
        matrix = [
            {
                "metric": labels,
                "values": [[_unix_seconds(t), format_value(points[t])] for t in sorted(points)],
            }
            for labels, points in series
        ]
        stats.returned = sum(len(points) for _, points in series)
        return _result("matrix", matrix, stats)

    async def _query(self, request: web.Request) -> web.Response:
        form = request[FORM]
        streams = self._streams(request)
        _limit(form)
        at = _wrap(lambda: parse_timestamp(_get(form, "time"), self._now()))
        _direction(form)
        expr = parse_logql(_get(form, "query"))
        if isinstance(expr, LogQuery):
            raise _bad_request(ERR_INSTANT_LOG_QUERY)
        # The entries limit (parsed and validated above) applies to log queries only.
        stats = _Stats()
        series = self._metric(streams, expr, [at], stats)
        if len(series) > self.max_query_series:
            raise _bad_request(ERR_MAX_SERIES.format(self.max_query_series))
        vector = [
            {"metric": labels, "value": [_unix_seconds(at), format_value(points[at])]}
            for labels, points in series
        ]
        stats.returned = len(vector)
        return _result("vector", vector, stats)

    async def _labels(self, request: web.Request) -> web.Response:
        streams = self._label_streams(request)
        return _labels_response(sorted({name for s in streams for name in s.labels}))

    async def _label_values(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        streams = self._label_streams(request)
        return _labels_response(sorted({s.labels[name] for s in streams if name in s.labels}))

    def _label_streams(self, request: web.Request) -> list[_Stream]:
        form = request[FORM]
        streams = self._streams(request)
        start, end = self._bounds(form)
        query = _get(form, "query")
        matchers: tuple[Matcher, ...] = ()
        if query:
            expr = parse_logql(query)
            if not isinstance(expr, LogQuery) or expr.filters:
                raise _bad_request(ERR_ONLY_MATCHERS)
            matchers = expr.matchers
        return [
            s
            for s in streams
            if all(m.matches(s.labels.get(m.name, "")) for m in matchers)
            and any(start <= ts <= end for ts, _ in s.entries)
        ]

    # -- evaluation ----------------------------------------------------------------------

    def _bounds(self, form: dict[str, list[str]]) -> tuple[int, int]:
        """``determineBounds``: end defaults to now, start to min(end, now) - since."""
        now = self._now()
        since = 3600 * NS
        since_text = _get(form, "since")
        if since_text:
            since = _wrap(
                lambda: parse_prom_duration(since_text), "could not parse 'since' parameter"
            )
        end = _wrap(
            lambda: parse_timestamp(_get(form, "end"), now), "could not parse 'end' parameter"
        )
        start = _wrap(
            lambda: parse_timestamp(_get(form, "start"), min(end, now) - since),
            "could not parse 'start' parameter",
        )
        return start, end

    def _check_limit(self, limit: int) -> None:
        cap = self.max_entries_limit_per_query
        if cap and limit > cap:
            raise _bad_request(ERR_MAX_ENTRIES.format(limit, cap))

    @staticmethod
    def _selected(streams: list[_Stream], query: LogQuery) -> list[_Stream]:
        return [
            s for s in streams if all(m.matches(s.labels.get(m.name, "")) for m in query.matchers)
        ]

    def _log_result(
        self,
        streams: list[_Stream],
        query: LogQuery,
        start: int,
        end: int,
        limit: int,
        forward: bool,
        stats: _Stats,
    ) -> list[dict[str, Any]]:
        found: list[tuple[int, str, int, str]] = []  # ts, stream key, order, line
        by_key: dict[str, _Stream] = {}
        for stream in self._selected(streams, query):
            key = labels_string(stream.labels)
            by_key[key] = stream
            lo = bisect.bisect_left(stream.timestamps, start)
            hi = bisect.bisect_left(stream.timestamps, end)
            window = stream.entries[lo:hi]
            stats.scanned(window)
            for order, (ts, line) in enumerate(window):
                if all(f.keeps(line) for f in query.filters):
                    found.append((ts, key, order, line))
        found.sort(key=lambda e: (e[0], e[1], e[2]), reverse=not forward)
        kept = found[:limit]
        stats.returned = len(kept)
        grouped: dict[str, list[list[str]]] = {}
        for ts, key, _, line in kept:
            grouped.setdefault(key, []).append([str(ts), line])
        return [
            {"stream": dict(sorted(by_key[key].labels.items())), "values": grouped[key]}
            for key in sorted(grouped)
        ]

    def _metric(
        self, streams: list[_Stream], expr: MetricExpr, steps: list[int], stats: _Stats
    ) -> list[Series]:
        if isinstance(expr, RangeAggregation):
            series: list[Series] = []
            lo_all, hi_all = steps[0] - expr.range_ns, steps[-1]
            for stream in self._selected(streams, expr.query):
                times = stream.timestamps
                window = stream.entries[
                    bisect.bisect_right(times, lo_all) : bisect.bisect_right(times, hi_all)
                ]
                stats.scanned(window)
                kept = [ts for ts, line in window if all(f.keeps(line) for f in expr.query.filters)]
                points: dict[int, float] = {}
                for t in steps:
                    count = bisect.bisect_right(kept, t) - bisect.bisect_right(
                        kept, t - expr.range_ns
                    )
                    if count:
                        seconds = expr.range_ns / NS
                        points[t] = (
                            float(count) if expr.op == "count_over_time" else count / seconds
                        )
                if points:
                    series.append((dict(sorted(stream.labels.items())), points))
            return sorted(series, key=lambda s: _sort_key(s[0]))
        groups: dict[str, Series] = {}
        for labels, points in self._metric(streams, expr.inner, steps, stats):
            names = expr.by or ()
            group = {k: labels[k] for k in sorted(names) if labels.get(k)}
            _, total = groups.setdefault(labels_string(group), (group, {}))
            for t, value in points.items():
                total[t] = total.get(t, 0.0) + value
        return sorted(groups.values(), key=lambda s: _sort_key(s[0]))


# -- HTTP helpers ----------------------------------------------------------------------------


def _only(methods: tuple[str, ...], handler: Handler) -> Handler:
    """Route with gorilla/mux ``Methods(...)``: another method gets 405 with no body."""

    async def route(request: web.Request) -> web.StreamResponse:
        if request.method not in methods:
            return web.Response(status=405)
        return await handler(request)

    return route


async def _form(request: web.Request) -> dict[str, list[str]]:
    """Go's ``Request.ParseForm``: url-encoded POST body values first, then the URL's."""
    form: dict[str, list[str]] = {}
    if request.method in ("POST", "PUT", "PATCH") and request.content_type == (
        "application/x-www-form-urlencoded"
    ):
        for key, value in (await request.post()).items():
            form.setdefault(key, []).append(str(value))
    for key, value in request.query.items():
        form.setdefault(key, []).append(value)
    return form


def _get(form: dict[str, list[str]], key: str) -> str:
    values = form.get(key)
    return values[0] if values else ""


def _wrap(parse: Callable[[], int], context: str = "") -> int:
    try:
        value = parse()
    except _ValueError as exc:
        raise _bad_request(f"{context}: {exc}" if context else str(exc)) from None
    return value


def _limit(form: dict[str, list[str]]) -> int:
    text = _get(form, "limit")
    if not text:
        return 100
    limit = _wrap(lambda: _go_int("strconv.Atoi", text))
    if limit <= 0:
        raise _bad_request("limit must be a positive value")
    if limit > 2**32 - 1:
        raise _bad_request(f"limit value {limit} is out of range [0, {2**32 - 1}]")
    return limit


def _direction(form: dict[str, list[str]]) -> bool:
    """True for forward."""
    text = _get(form, "direction")
    if not text:
        return False
    if text.upper() not in ("FORWARD", "BACKWARD"):
        raise _bad_request(f"invalid direction '{text}'")
    return text.upper() == "FORWARD"


def _step(form: dict[str, list[str]], start: int, end: int) -> int:
    text = _get(form, "step")
    if not text:
        return max(math.floor((end - start) / NS / 250), 1) * NS
    return _wrap(lambda: parse_seconds_or_duration(text))


def _datetime_ns(moment: datetime) -> int:
    if moment.tzinfo is None:
        raise ValueError("use timezone-aware datetimes")
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86400 + delta.seconds) * NS + delta.microseconds * 1000


def _text(status: int, body: str) -> web.Response:
    response = web.Response(status=status, text=body, content_type="text/plain", charset="utf-8")
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def _json(payload: Any) -> web.Response:
    body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")) + "\n"
    return web.Response(body=body.encode(), content_type="application/json", charset="UTF-8")


def _result(kind: str, result: list[dict[str, Any]], stats: _Stats) -> web.Response:
    return _json(
        {"status": "success", "data": {"resultType": kind, "result": result, "stats": stats.json()}}
    )


def _labels_response(values: list[str]) -> web.Response:
    payload: dict[str, Any] = {"status": "success"}
    if values:  # Loki's LabelResponse.Data is omitempty
        payload["data"] = values
    return _json(payload)
