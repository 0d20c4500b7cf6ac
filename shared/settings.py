"""Typed settings shared by every service, read once from the environment.

Kafka and database settings are common to all services (``PMO_KAFKA_*``, ``PMO_DATABASE_*``);
each service adds its own class with its own prefix (``PMO_SCORING_*`` …).
"""

from __future__ import annotations

from typing import Literal, Self
from urllib.parse import quote, urlsplit, urlunsplit

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """Connection to the Kafka cluster (``PMO_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="PMO_KAFKA_", extra="ignore")

    bootstrap_servers: str = "127.0.0.1:9092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    # Off for the local tansu broker, which refuses InitProducerId; on against Apache Kafka.
    enable_idempotence: bool = False
    topic_prefix: str = ""
    client_id: str = "pmo"


class DatabaseSettings(BaseSettings):
    """The Postgres server (``PMO_DATABASE_*``).

    ``url`` is the administrative connection used by migrations. A service connects with its own
    role: ``PMO_<SERVICE>_DATABASE_URL`` when set, otherwise ``url`` with the user replaced by
    the service's role and the password from ``PMO_<SERVICE>_DATABASE_PASSWORD``.
    """

    model_config = SettingsConfigDict(env_prefix="PMO_DATABASE_", extra="ignore")

    url: str = "postgresql://postgres@127.0.0.1:5432/postgres"
    pool_min_size: int = 1
    pool_max_size: int = 8


class ServiceSettings(BaseSettings):
    """Settings every service has; subclasses set ``env_prefix`` and defaults."""

    model_config = SettingsConfigDict(extra="ignore")

    database_url: str | None = None
    database_password: SecretStr | None = None
    group_id: str = ""
    http_host: str = "127.0.0.1"
    http_port: int = 0
    # Batch consumption: up to max_records per transaction. A consumer's loop waits up to
    # batch_timeout_ms for records and takes them when they arrive; an idle loop wakes once in
    # that time (shared.consumer). The defaults here are a submission's path's; derived work
    # waits longer (DERIVED_WAIT_MS).
    max_records: int = Field(default=500, ge=1)
    batch_timeout_ms: int = Field(default=20, ge=1)
    # How long the broker may hold a fetch that has no data yet (Kafka's fetch.max.wait.ms,
    # 500 ms by default). A broker that answers a held fetch only when this runs out, rather
    # than when data arrives, adds up to this to every hop; a short wait bounds that at the
    # price of more empty fetches while idle (docs/operations.md).
    fetch_max_wait_ms: int = Field(default=20, ge=0)
    # How much data the broker gathers before it answers a fetch, waiting at most
    # fetch_max_wait_ms (Kafka's fetch.min.bytes). 1 answers as soon as anything is there; a
    # service whose work per batch grows with the portfolio rather than with the batch sets it
    # high, so that a steady feed reaches it in batches of fetch_max_wait_ms rather than of a
    # few records each (docs/operations.md).
    fetch_min_bytes: int = Field(default=1, ge=1)
    # Whether the consumer fetches the next records while a batch is processed, as aiokafka's
    # does by default. Off, a batch's partitions are paused while it is processed and fetched
    # when the loop asks for the next batch, which then holds all that arrived meanwhile; on,
    # the fetch made as a batch is taken keeps what arrives first, and records published later
    # in the batch's processing wait for the batch after next (shared.consumer,
    # docs/operations.md).
    fetch_ahead: bool = False
    # Offsets are committed after the batches' transactions, at most this often: a commit is a
    # request to the broker and a round trip in the consumer's loop, and the inbox makes a
    # record delivered again a no-op, so committing less often costs only what is delivered
    # again after a crash, and a group lag that reads up to this much high (which KEDA's
    # scaler sees). 0 commits after every batch (docs/operations.md).
    commit_interval_ms: int = Field(default=250, ge=0)
    # Transient failures are retried with capped exponential backoff for this long, then the
    # batch is handed back to Kafka (offsets rewound) and consumption resumes later.
    retry_max_seconds: float = 120.0
    # A stop (SIGTERM) finishes the in-flight batch within this; Kubernetes'
    # terminationGracePeriodSeconds must be longer.
    shutdown_grace_seconds: float = 20.0
    log_level: str = "INFO"
    log_json: bool = True
    # The process's CPU priority on a host it shares, as nice(1): 0 to 19, unset (the default)
    # to keep the one it was started with. A process with a higher value gets the processor
    # only as far as those with a lower one leave it; a service only ever raises its value.
    # Derived work (scoring, capacity, reporting's others role) takes 10 where a submission's
    # own path (intake, reporting's projects and api roles) shares the host, so that the path
    # is not queued behind it and the derived work, left what the path does not use, reads
    # larger batches (docs/operations.md, "CPU weights"). In containers the weight is the
    # container's: compose's cpu_shares, Kubernetes' CPU requests.
    nice: int | None = Field(default=None, ge=0, le=19)

    def waiting(self, ms: int) -> Self:
        """These settings with a consumer's waits (its fetch wait and batch timeout) at ``ms``."""
        return self.model_copy(update={"fetch_max_wait_ms": ms, "batch_timeout_ms": ms})


# How long the consumers of derived work (scoring's, capacity's, and reporting's of everything
# but project changes) wait for records: their fetch wait and batch timeout. Their results
# follow a change by a second or more anyway (rank settles, replan spacing); idle, each such
# consumer asks the broker five times less often than at the path's 20 ms, which halves what an
# idle stack costs the broker (docs/operations.md, "Consumer tuning").
DERIVED_WAIT_MS = 100


class DerivedServiceSettings(ServiceSettings):
    """The settings of a service whose every consumer is derived work (scoring, capacity): it
    waits ``DERIVED_WAIT_MS`` for records unless told otherwise."""

    batch_timeout_ms: int = Field(default=DERIVED_WAIT_MS, ge=1)
    fetch_max_wait_ms: int = Field(default=DERIVED_WAIT_MS, ge=0)


def role_url(admin_url: str, role: str, password: str | None = None) -> str:
    """``admin_url`` with its user replaced by ``role`` (and the password, if given)."""
    parts = urlsplit(admin_url)
    host = parts.netloc.rsplit("@", 1)[-1] if "@" in parts.netloc else parts.netloc
    auth = quote(role, safe="")
    if password:
        auth += ":" + quote(password, safe="")
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}"))


def service_database_url(service: ServiceSettings, database: DatabaseSettings, role: str) -> str:
    if service.database_url:
        return service.database_url
    password = service.database_password.get_secret_value() if service.database_password else None
    return role_url(database.url, role, password)
