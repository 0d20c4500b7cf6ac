"""The AsyncAPI 3.0 document of every topic, generated from the topic registry and the pydantic
contracts so that it cannot drift from the code (CI compares it with docs/asyncapi.json).

``python -m shared.asyncapi`` prints it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from shared import deadletter
from shared.contracts.capacity import CapacityRequestMessage, PortfolioPlanned, ScenarioResult
from shared.contracts.events import (
    DuplicatesFound,
    PlansChanged,
    PortfolioProject,
    ProjectChanged,
    ProjectPlanned,
    ProjectsChanged,
    ProjectScored,
    RankingChanged,
    ScoresChanged,
)
from shared.contracts.inbound import ProjectSubmission, ResourceUpdate
from shared.contracts.scoring import ScoringAudit, ScoringCommandMessage
from shared.topics import TOPIC_SPECS, Topic


@dataclass(frozen=True, slots=True)
class Channel:
    topic: Topic
    message: str
    payload: type[BaseModel] | None
    key: str
    writers: tuple[str, ...]
    readers: tuple[str, ...]
    summary: str
    event_type: str | None


CHANNELS = (
    Channel(
        Topic.SUBMISSIONS,
        "ProjectSubmission",
        ProjectSubmission,
        "{portfolio}/{source}/{external_id}",
        ("upstream",),
        ("intake",),
        "Project submissions from upstream systems (Jira, ServiceNow, spreadsheets). Plain "
        "JSON, no headers required. `submission_id` is the idempotency key; `revision` orders "
        "updates of one project.",
        None,
    ),
    Channel(
        Topic.RESOURCES,
        "ResourceUpdate",
        ResourceUpdate,
        "{portfolio}/{resource_id}",
        ("upstream",),
        ("capacity",),
        "Capacity pools from HR systems: a person or team providing `fte` of one `role`.",
        None,
    ),
    Channel(
        Topic.SCORING_COMMANDS,
        "ScoringCommand",
        ScoringCommandMessage,
        "{portfolio}",
        ("pmo CLI",),
        ("scoring",),
        "Analysts' commands: set a portfolio's scoring model (a new version), pin or adjust a "
        "project's rank with a justification, clear an override, rescore. `command_id` is the "
        "idempotency key; refused commands are dead-lettered with reasons and audited.",
        None,
    ),
    Channel(
        Topic.PROJECTS,
        "ProjectsChanged",
        ProjectsChanged,
        "{portfolio}",
        ("intake",),
        ("scoring", "capacity", "reporting", "intake"),
        "The submissions of a portfolio that intake accepted in one batch: each project's full "
        "state (event-carried state transfer), with its revision and the fields that changed; "
        f"up to {ProjectsChanged.MAX_PROJECTS:,} projects and about "
        f"{ProjectsChanged.MAX_BYTES // 1024} KiB per event. Intake reads them back to search "
        "the projects they open for possible duplicates (pmo.intake.duplicates.v1).",
        ProjectsChanged.TYPE,
    ),
    Channel(
        Topic.DUPLICATES,
        "DuplicatesFound",
        DuplicatesFound,
        "{portfolio}",
        ("intake",),
        ("reporting",),
        "The possible duplicates of the projects one ProjectsChanged opened: for each, the "
        "portfolio's projects whose names closely match its name, best first (none is an "
        "answer too), found after the change was published so that a submission never waits "
        f"for the search; up to {DuplicatesFound.MAX_PROJECTS:,} projects and about "
        f"{DuplicatesFound.MAX_BYTES // 1024} KiB per event.",
        DuplicatesFound.TYPE,
    ),
    Channel(
        Topic.PROJECTS,
        "ProjectChanged",
        ProjectChanged,
        "{portfolio}/{source}/{external_id}",
        ("intake",),
        ("scoring", "capacity", "reporting", "intake"),
        "One project's full state, as versions before ProjectsChanged published it; no longer "
        "published, still applied by consumers, so records already on the topic are read "
        "after an upgrade.",
        ProjectChanged.TYPE,
    ),
    Channel(
        Topic.SCORES,
        "ScoresChanged",
        ScoresChanged,
        "{portfolio}",
        ("scoring",),
        ("capacity", "reporting"),
        "Scores, explanations and ranks of the projects whose score, explanation or override "
        "changed in one re-ranking of a portfolio: one project revised or a whole portfolio "
        f"rescored, up to {ScoresChanged.MAX_SCORES:,} projects and about "
        f"{ScoresChanged.MAX_BYTES // 1024} KiB per event.",
        ScoresChanged.TYPE,
    ),
    Channel(
        Topic.SCORES,
        "ProjectScored",
        ProjectScored,
        "{portfolio}/{source}/{external_id}",
        ("scoring",),
        ("capacity", "reporting"),
        "One project's score, explanation and rank, as versions before ScoresChanged published "
        "them; no longer published, still applied by consumers, so records already on the "
        "topic are read after an upgrade.",
        ProjectScored.TYPE,
    ),
    Channel(
        Topic.SCORES,
        "RankingChanged",
        RankingChanged,
        "{portfolio}",
        ("scoring",),
        ("capacity", "reporting"),
        "Rank moves of projects whose score did not change (those a new or rescored project "
        f"pushed up or down), up to {RankingChanged.MAX_RANKS:,} per event. Keyed by "
        "portfolio: same partition, and "
        "so the same order, as the portfolio's ScoresChanged events.",
        RankingChanged.TYPE,
    ),
    Channel(
        Topic.SCORING_AUDIT,
        "ScoringAudit",
        ScoringAudit,
        "{portfolio}",
        ("scoring",),
        ("reporting",),
        "The audit trail of scoring: every model change, override and rescore, who asked for "
        "it, why, and whether it was applied or refused. Kept for good.",
        ScoringAudit.TYPE,
    ),
    Channel(
        Topic.PLANS,
        "PlansChanged",
        PlansChanged,
        "{portfolio}",
        ("capacity",),
        ("reporting",),
        "The projects whose place in the portfolio's capacity plan changed in one replan, "
        "each planned (start and end month), committed, deferred (and why) or excluded; up to "
        f"{PlansChanged.MAX_PLANS:,} projects and {PlansChanged.MAX_BYTES // 1024} KiB per "
        "event.",
        PlansChanged.TYPE,
    ),
    Channel(
        Topic.PLANS,
        "ProjectPlanned",
        ProjectPlanned,
        "{portfolio}/{source}/{external_id}",
        ("capacity",),
        ("reporting",),
        "One project's place in the plan, as versions before PlansChanged published it; no "
        "longer published, still applied by reporting, so records already on the topic are "
        "read after an upgrade.",
        ProjectPlanned.TYPE,
    ),
    Channel(
        Topic.CAPACITY_COMMANDS,
        "CapacityRequest",
        CapacityRequestMessage,
        "{portfolio}",
        ("pmo CLI", "reporting API"),
        ("capacity",),
        "What-if and optimise requests: a `whatif` with a "
        "scenario of changes, or an `optimise` with an objective and a time limit. "
        "`request_id` is the idempotency key; the answer is a ScenarioResult with that id.",
        None,
    ),
    Channel(
        Topic.PLAN_SUMMARIES,
        "PortfolioPlanned",
        PortfolioPlanned,
        "{portfolio}",
        ("capacity",),
        ("reporting",),
        "A portfolio's plan summary after a replan: utilisation per role and month (the heat "
        "map), conflicts in committed work with suggested resolutions, skill gaps. Compacted: "
        "the latest per portfolio is what counts.",
        PortfolioPlanned.TYPE,
    ),
    Channel(
        Topic.SCENARIOS,
        "ScenarioResult",
        ScenarioResult,
        "{portfolio}",
        ("capacity",),
        ("reporting", "pmo CLI"),
        "The answer to a what-if or optimise request: projects started, deferred and moved "
        "against the plan, utilisation changes, and for optimise the objective, bound and gap.",
        ScenarioResult.TYPE,
    ),
    Channel(
        Topic.PORTFOLIO_PROJECTS,
        "PortfolioProject",
        PortfolioProject,
        "{portfolio}/{source}/{external_id}",
        ("reporting",),
        ("warehouse sinks",),
        "One denormalised record per project (intake's state, scoring's score, rank and "
        "explanation, capacity's placement), republished when any of it changes, coalesced: "
        "at most one record per project about every PMO_REPORTING_WAREHOUSE_INTERVAL_MS. "
        "Compacted: a sink keeps the latest per key. Withdrawn projects keep their last record "
        "with `withdrawn: true`.",
        PortfolioProject.TYPE,
    ),
    Channel(
        Topic.DEAD_LETTERS,
        "DeadLetter",
        None,
        "the refused record's key",
        ("intake", "scoring", "capacity", "reporting"),
        ("reporting", "operators"),
        "Records a consumer refused: key and value are the original bytes (truncated past "
        f"{deadletter.MAX_ORIGINAL_BYTES} bytes), reasons and origin in `pmo_dlq_*` headers.",
        deadletter.EVENT_TYPE,
    ),
)

_CE_HEADERS = {
    "ce_specversion": "CloudEvents spec version, `1.0`",
    "ce_id": "Event id, stable across redelivery; consumers deduplicate on it",
    "ce_type": "Event type",
    "ce_source": "The producing service, `pmo/<service>`",
    "ce_time": "When the event was produced (RFC 3339)",
    "ce_subject": "The record key",
}

# Optional: present when the producing service traces (see docs/operations.md).
_TRACE_HEADERS = {
    "traceparent": "W3C Trace Context of the work that wrote the event (optional)",
    "tracestate": "W3C Trace Context vendor state (optional)",
}

_DLQ_HEADERS = {
    deadletter.REASONS: "JSON list of reasons: `[{path, code, message}]`",
    deadletter.SOURCE_TOPIC: "Topic the refused record came from",
    deadletter.SOURCE_PARTITION: "Its partition",
    deadletter.SOURCE_OFFSET: "Its offset",
    deadletter.CONSUMER: "The service that refused it",
    deadletter.ORIGINAL_SIZE: "Size of the original value in bytes",
    deadletter.ORIGINAL_SHA256: "SHA-256 of the original value",
    deadletter.TRUNCATED: "`true` when the value was cut to fit the topic",
    deadletter.ORIGINAL_HEADERS: (
        "JSON object of the original record's CloudEvents headers (`ce_*`, `content-type`),"
        " which `pmo deadletters replay` restores"
    ),
}


def _headers(channel: Channel) -> dict[str, Any] | None:
    if channel.event_type is None:
        return None
    fields = {**_CE_HEADERS, **_TRACE_HEADERS}
    if channel.topic == Topic.DEAD_LETTERS:
        fields.update(_DLQ_HEADERS)
    properties: dict[str, Any] = {
        name: {"type": "string", "description": text} for name, text in fields.items()
    }
    properties["ce_type"]["const"] = channel.event_type
    return {"type": "object", "properties": properties, "required": sorted(_CE_HEADERS)}


def asyncapi_document() -> dict[str, Any]:
    specs = {spec.topic: spec for spec in TOPIC_SPECS}
    channels: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    for channel in CHANNELS:
        spec = specs[channel.topic]
        channel_id = channel.topic.value.replace(".", "_")
        message: dict[str, Any] = {
            "name": channel.message,
            "title": channel.message,
            "summary": channel.summary,
            "contentType": "application/json" if channel.payload else "application/octet-stream",
            "bindings": {"kafka": {"key": {"type": "string", "description": channel.key}}},
        }
        if channel.payload is not None:
            schema = channel.payload.model_json_schema(
                by_alias=True, ref_template="#/components/schemas/{model}"
            )
            schemas.update(schema.pop("$defs", {}))
            schemas[channel.message] = schema
            message["payload"] = {"$ref": f"#/components/schemas/{channel.message}"}
        else:
            message["payload"] = {"type": "string", "format": "binary"}
        headers = _headers(channel)
        if headers is not None:
            message["headers"] = headers
        messages[channel.message] = message
        ref = {"$ref": f"#/components/messages/{channel.message}"}
        if channel_id in channels:  # another event type on a topic already described
            channels[channel_id]["messages"][channel.message] = ref
            channels[channel_id]["description"] += " " + channel.summary
        else:
            channels[channel_id] = {
                "address": channel.topic.value,
                "description": channel.summary,
                "messages": {channel.message: ref},
                "bindings": {
                    "kafka": {
                        "partitions": spec.partitions,
                        "topicConfiguration": {
                            "cleanup.policy": [spec.config.get("cleanup.policy", "delete")],
                            "retention.ms": int(spec.config.get("retention.ms", "-1")),
                        },
                    }
                },
            }
        for action, verb, parties in (
            ("send", "sends", channel.writers),
            ("receive", "receives", channel.readers),
        ):
            for party in parties:
                operation = operations.setdefault(
                    f"{party}_{verb}_{channel_id}",
                    {
                        "action": action,
                        "channel": {"$ref": f"#/channels/{channel_id}"},
                        "messages": [],
                        "summary": f"{party} {'publishes' if action == 'send' else 'consumes'}",
                    },
                )
                operation["messages"].append(
                    {"$ref": f"#/channels/{channel_id}/messages/{channel.message}"}
                )
                operation["summary"] += (
                    " and " if operation["messages"][1:] else " "
                ) + channel.message
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "pmo events",
            "version": "1.0.0",
            "description": (
                "Every Kafka topic of pmo. Names may carry a deployment prefix "
                "(PMO_KAFKA_TOPIC_PREFIX). Internal events carry CloudEvents 1.0 attributes "
                "as headers (binary mode)."
            ),
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }


def render() -> str:
    return json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
