"""Tracing: off unless configured; when on, one submission followed through the four services
over the real broker and Postgres is one trace, carried through the outbox in Kafka headers."""

from __future__ import annotations

import json
import uuid
from typing import Any

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from shared.consumer_record import Record
from shared.migrations import SERVICES
from shared.settings import DatabaseSettings, KafkaSettings
from shared.topics import Topic
from shared.tracing import MAX_LINKS, Tracing, TracingSettings, context_headers
from tests.helpers import eventually, key_of, submission
from tests.system import running


def _provider() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _traceparent(trace_id: int, span_id: int) -> bytes:
    return f"00-{trace_id:032x}-{span_id:016x}-01".encode()


def _record(offset: int, traceparent: bytes | None) -> Record:
    headers = (("traceparent", traceparent),) if traceparent else ()
    return Record("t", 0, offset, b"k", b"{}", headers, 0)


@pytest.mark.parametrize(
    ("environment", "exporter"),
    [
        ({}, "none"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, "none"),
        ({"OTEL_TRACES_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, "none"),
    ],
)
def test_tracing_is_off_unless_the_environment_configures_it(
    monkeypatch: pytest.MonkeyPatch, environment: dict[str, str], exporter: str
) -> None:
    for name in (
        "OTEL_SDK_DISABLED",
        "OTEL_TRACES_EXPORTER",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ):
        monkeypatch.delenv(name, raising=False)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    assert TracingSettings().exporter == exporter


def test_off_writes_no_trace_headers() -> None:
    with Tracing("intake", None).batch([_record(0, _traceparent(7, 9))], group="g") as span:
        assert span is None
        assert context_headers() == {}


def test_a_batch_from_one_trace_continues_it_and_links_every_record() -> None:
    provider, exporter = _provider()
    records = [
        _record(0, _traceparent(0xABC, 1)),
        _record(1, None),
        _record(2, _traceparent(0xABC, 2)),
    ]
    with Tracing("scoring", provider).batch(records, group="pmo-scoring"):
        written = context_headers()
    (span,) = exporter.get_finished_spans()
    assert span.kind is SpanKind.CONSUMER
    assert span.context is not None
    assert span.parent is not None
    assert span.context.trace_id == 0xABC
    assert span.parent.span_id == 1
    assert [link.context.span_id for link in span.links] == [1, 2]
    assert span.attributes is not None
    assert span.attributes["messaging.batch.message_count"] == 3
    assert span.attributes["messaging.consumer.group.name"] == "pmo-scoring"
    # What the batch writes to its outbox carries the batch's own span.
    assert written["traceparent"] == f"00-{0xABC:032x}-{span.context.span_id:016x}-01"


def test_a_batch_from_many_traces_starts_its_own_and_links_them_capped() -> None:
    provider, exporter = _provider()
    records = [_record(i, _traceparent(1000 + i, 1 + i)) for i in range(MAX_LINKS + 10)]
    with Tracing("scoring", provider).batch(records, group="g"):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert span.context is not None
    assert span.context.trace_id not in {1000 + i for i in range(MAX_LINKS + 10)}
    assert len(span.links) == MAX_LINKS
    assert {link.context.trace_id for link in span.links} == {1000 + i for i in range(MAX_LINKS)}


def test_malformed_traceparent_is_ignored() -> None:
    provider, exporter = _provider()
    with Tracing("intake", provider).batch(
        [_record(0, b"00-not-a-trace-01"), _record(1, b"\xff\xfe")], group="g"
    ):
        pass
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert not span.links


def _in_trace(spans: tuple[ReadableSpan, ...], trace_id: int) -> list[ReadableSpan]:
    return [s for s in spans if s.context is not None and s.context.trace_id == trace_id]


@pytest.mark.e2e
async def test_one_submission_is_one_trace_through_the_four_services(
    database: DatabaseSettings, kafka: KafkaSettings
) -> None:
    providers = {name: _provider() for name in SERVICES}
    upstream_trace, upstream_span = uuid.uuid4().int >> 64 << 64 | 1, 0xFEED
    message = submission("TRACED-1")
    async with running(
        database, kafka, tracer_providers={n: p for n, (p, _) in providers.items()}
    ) as system:
        producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers)
        await producer.start()
        try:
            await producer.send_and_wait(
                system.topics(Topic.SUBMISSIONS),
                json.dumps(message).encode(),
                key=key_of(message),
                headers=[("traceparent", _traceparent(upstream_trace, upstream_span))],
            )
        finally:
            await producer.stop()

        async def planned() -> list[dict[str, Any]] | None:
            items = await system.projects(message["portfolio"])
            done = [i for i in items if i["rank"] is not None and i["plan_status"] is not None]
            return done or None

        await eventually(planned, what="the traced project scored and planned")

        async def traced(service: str) -> list[ReadableSpan] | None:
            spans = providers[service][1].get_finished_spans()
            return _in_trace(spans, upstream_trace) or None

        for service in SERVICES:
            await eventually(lambda s=service: traced(s), what=f"{service} spans in the trace")

        # An API call that sends its own trace context is served inside that trace.
        api_trace = uuid.uuid4().int >> 64 << 64 | 2
        response = await system.api.get(
            f"/api/v1/portfolios/{message['portfolio']}/projects",
            headers={"traceparent": _traceparent(api_trace, 0xBEEF).decode()},
        )
        assert response.status_code == 200
        served = _in_trace(providers["reporting"][1].get_finished_spans(), api_trace)
        assert [(s.kind, s.name) for s in served] == [
            (SpanKind.SERVER, f"GET /api/v1/portfolios/{message['portfolio']}/projects")
        ]

        # The outbox stored the context with the row, so the relay's own context is irrelevant.
        conn = await asyncpg.connect(database.url)
        try:
            headers = await conn.fetchval("SELECT headers FROM intake.outbox ORDER BY id LIMIT 1")
        finally:
            await conn.close()
    traceparent = json.loads(headers)["traceparent"]
    assert traceparent.split("-")[1] == f"{upstream_trace:032x}"

    intake = _in_trace(providers["intake"][1].get_finished_spans(), upstream_trace)
    assert intake[0].parent is not None
    assert intake[0].parent.span_id == upstream_span
    assert intake[0].kind is SpanKind.CONSUMER
    # Downstream, each consumer's span is a child of the batch span that wrote the event.
    ids = {
        s.context.span_id
        for p in providers.values()
        for s in _in_trace(p[1].get_finished_spans(), upstream_trace)
        if s.context is not None
    }
    for service in ("scoring", "capacity", "reporting"):
        for span in _in_trace(providers[service][1].get_finished_spans(), upstream_trace):
            assert span.parent is not None, service
            assert span.parent.span_id in ids, service
    assert trace.get_current_span().get_span_context().is_valid is False
