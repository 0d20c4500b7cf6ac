"""Distributed tracing with OpenTelemetry, off unless configured.

The causal chain of pmo runs through Kafka *and* the transactional outbox: a consumed batch
writes events to the outbox, and a relay publishes them later, outside the batch. So the trace
context cannot be taken from the publishing code (it would be the relay's); it is stored in the
outbox row's headers when the row is written (:func:`context_headers`, called by
``shared.outbox.add``) and travels with the record as a W3C ``traceparent`` Kafka header.

On the consuming side a batch is one span (``<topic> process``, kind CONSUMER), following the
messaging semantic conventions for batch processing: it links to the context of every record
that carries one, and when all those contexts belong to a single trace the span continues that
trace, so one submission followed through the pipeline is one trace end to end.

Configured with the standard OpenTelemetry variables: ``OTEL_TRACES_EXPORTER`` (``otlp`` or
``console``; unset or ``none`` means off, and so does ``OTEL_SDK_DISABLED=true``),
``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (setting either turns
OTLP on), ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``, ``OTEL_TRACES_SAMPLER``. When off,
no provider exists, nothing is recorded and no header is written.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Literal

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.consumer_record import Record

log = logging.getLogger(__name__)

# W3C Trace Context: the one propagation format every tracing backend reads.
_propagator = TraceContextTextMapPropagator()
# A batch of up to max_records links to at most this many producers (the spec allows more, but
# backends truncate and the span grows with every link).
MAX_LINKS = 128


class TracingSettings(BaseSettings):
    """The standard ``OTEL_*`` variables that decide whether and where spans go."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    sdk_disabled: bool = False
    traces_exporter: Literal["none", "otlp", "console"] | None = None
    exporter_otlp_endpoint: str | None = None
    exporter_otlp_traces_endpoint: str | None = None
    service_name: str | None = None

    @property
    def exporter(self) -> Literal["none", "otlp", "console"]:
        if self.sdk_disabled:
            return "none"
        if self.traces_exporter is not None:
            return self.traces_exporter
        if self.exporter_otlp_endpoint or self.exporter_otlp_traces_endpoint:
            return "otlp"
        return "none"


def provider_from_environment(service: str) -> TracerProvider | None:
    """A tracer provider exporting as the environment says, or None when tracing is off."""
    settings = TracingSettings()
    exporter = settings.exporter
    if exporter == "none":
        return None
    resource = Resource.create({SERVICE_NAME: settings.service_name or f"pmo-{service}"})
    provider = TracerProvider(resource=resource)
    if exporter == "otlp":
        # Imported only when used: the exporter pulls in protobuf.
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    else:
        provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
    log.info("tracing on: %s exporter", exporter)
    return provider


class Tracing:
    """A service's tracer, or nothing at all when tracing is off."""

    def __init__(self, service: str, provider: TracerProvider | None) -> None:
        self.service = service
        self.provider = provider

    def use(self, provider: TracerProvider | None) -> None:
        """Replace the provider (before the service starts), e.g. with an in-memory one."""
        self.provider = provider

    @property
    def enabled(self) -> bool:
        return self.provider is not None

    @contextlib.contextmanager
    def batch(self, records: Sequence[Record], *, group: str) -> Iterator[trace.Span | None]:
        """The span of processing one consumed batch; current while the batch is processed,
        so everything the batch writes to the outbox carries it."""
        if self.provider is None or not records:
            yield None
            return
        producers = [
            context
            for context in (_span_context(record) for record in records)
            if context is not None
        ]
        traces = {context.trace_id for context in producers}
        parent: Context | None = None
        if len(traces) == 1:
            parent = trace.set_span_in_context(trace.NonRecordingSpan(producers[0]))
        topics = sorted({record.topic for record in records})
        attributes: dict[str, str | int] = {
            "messaging.system": "kafka",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.consumer.group.name": group,
            "messaging.batch.message_count": len(records),
            "messaging.destination.name": ",".join(topics),
        }
        tracer = self.provider.get_tracer("pmo", schema_url=None)
        with tracer.start_as_current_span(
            f"{','.join(topics)} process",
            context=parent if parent is not None else Context(),
            kind=SpanKind.CONSUMER,
            links=[Link(context) for context in producers[:MAX_LINKS]],
            attributes=attributes,
        ) as span:
            yield span

    @contextlib.contextmanager
    def request(self, method: str, path: str, headers: Mapping[str, str]) -> Iterator[None]:
        """The span of one HTTP request, continuing the caller's trace if it sent one."""
        if self.provider is None:
            yield
            return
        tracer = self.provider.get_tracer("pmo", schema_url=None)
        with tracer.start_as_current_span(
            f"{method} {path}",
            context=_propagator.extract(headers),
            kind=SpanKind.SERVER,
            attributes={"http.request.method": method, "url.path": path},
        ):
            yield

    def shutdown(self) -> None:
        """Flush buffered spans (bounded by the exporter's own timeout)."""
        if self.provider is not None:
            self.provider.shutdown()


def failed(span: trace.Span | None, description: str) -> None:
    """Mark a batch span as failed without an exception (e.g. rewound for redelivery)."""
    if span is not None:
        span.set_status(Status(StatusCode.ERROR, description))


def context_headers() -> dict[str, str]:
    """``traceparent`` (and ``tracestate``) of the current span, for a record written now;
    empty when no span is recording (tracing off, or outside any traced work)."""
    span = trace.get_current_span()
    if not span.get_span_context().is_valid:
        return {}
    carrier: dict[str, str] = {}
    _propagator.inject(carrier)
    return carrier


def _span_context(record: Record) -> trace.SpanContext | None:
    traceparent = record.header("traceparent")
    if traceparent is None:
        return None
    carrier = {"traceparent": traceparent}
    state = record.header("tracestate")
    if state is not None:
        carrier["tracestate"] = state
    context = trace.get_current_span(_propagator.extract(carrier)).get_span_context()
    return context if context.is_valid else None
