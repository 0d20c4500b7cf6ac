"""The Kafka broker factory: one place that turns typed settings into a FastStream broker."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Sequence
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512
from prometheus_client import REGISTRY

from shared.settings import KafkaSettings

_default_partitioner = DefaultPartitioner()


def portfolio_partitioner(
    key: bytes | None, all_partitions: Sequence[int], available: Sequence[int]
) -> int:
    """Partition by the portfolio, the first segment of every pmo key.

    All events of one portfolio land in one partition, so the replica that owns it sees them in
    order and portfolio-wide work (ranking, planning) is not split across replicas.
    """
    portfolio = key.split(b"/", 1)[0] if key else None
    partition: int = _default_partitioner(portfolio, list(all_partitions), list(available))
    return partition


def _security(settings: KafkaSettings) -> BaseSecurity | None:
    context: ssl.SSLContext | None = None
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
    if settings.security_protocol.startswith("SASL"):
        username = settings.sasl_username or ""
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        use_ssl = settings.security_protocol == "SASL_SSL"
        kinds: dict[str, Any] = {
            "PLAIN": SASLPlaintext,
            "SCRAM-SHA-256": SASLScram256,
            "SCRAM-SHA-512": SASLScram512,
        }
        sasl = kinds[settings.sasl_mechanism or "PLAIN"]
        security: BaseSecurity = sasl(username, password, ssl_context=context, use_ssl=use_ssl)
        return security
    if context is not None:
        return BaseSecurity(ssl_context=context, use_ssl=True)
    return None


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Connection options for plain aiokafka clients (admin, CLI tools, benchmarks)."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "security_protocol": settings.security_protocol,
    }
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(cafile=settings.ssl_cafile)
        if settings.ssl_certfile:
            context.load_cert_chain(settings.ssl_certfile, settings.ssl_keyfile)
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        options["sasl_mechanism"] = settings.sasl_mechanism or "PLAIN"
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return options


# How every pmo producer publishes: acknowledged by all in-sync replicas, partitioned by
# portfolio, batched with a short linger. A batch holds up to 1,000,000 bytes, within Kafka's
# default message.max.bytes (1,048,588): aiokafka keeps one request in flight per partition, so
# a rescore's records (up to 256 KiB each, all of one portfolio's partition) went one round trip
# each with 256 KiB batches; three or more a request took its relay from 0.72 to 0.43-0.50 s.
PRODUCER_OPTIONS: dict[str, Any] = {
    "acks": "all",
    "partitioner": portfolio_partitioner,
    "linger_ms": 5,
    "max_batch_size": 1_000_000,
}


def make_producer(settings: KafkaSettings, *, client_id: str) -> AIOKafkaProducer:
    """A plain aiokafka producer with the services' options, for the outbox relay: it is the
    one hot publishing path, and a record sent through the framework's ``publish`` costs
    several times a record sent here (docs/performance.md). Create it inside the event loop."""
    return AIOKafkaProducer(
        **client_options(settings),
        client_id=client_id,
        enable_idempotence=settings.enable_idempotence,
        **PRODUCER_OPTIONS,
    )


def make_broker(settings: KafkaSettings, *, client_id: str, **kwargs: Any) -> KafkaBroker:
    """A broker whose producer partitions by portfolio and batches with a short linger."""
    return KafkaBroker(
        settings.bootstrap_servers,
        client_id=client_id,
        security=_security(settings),
        enable_idempotence=settings.enable_idempotence,
        **PRODUCER_OPTIONS,
        # On shutdown, wait this long for the in-flight batch to finish before closing.
        graceful_timeout=20.0,
        # FastStream logs every consumed batch at INFO; that belongs at DEBUG. Its records go
        # through our handlers (JSON in production) rather than its own coloured one.
        log_level=logging.DEBUG,
        logger=logging.getLogger("pmo.faststream"),
        # FastStream's own metrics (received, processed, published, durations), next to ours.
        middlewares=(KafkaPrometheusMiddleware(registry=REGISTRY, app_name=client_id),),
        **kwargs,
    )
