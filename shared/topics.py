"""The one registry of topic names, partition counts and retention policies.

Every topic name used by a service or a test comes from here. A deployment may prefix all names
(``PMO_KAFKA_TOPIC_PREFIX``) so that several environments, or tests, share one cluster.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Topic(StrEnum):
    """Base topic names. ``.v1`` is part of the contract: breaking changes get a new topic."""

    # Inbound contracts written by upstream systems.
    SUBMISSIONS = "pmo.intake.submissions.v1"
    RESOURCES = "pmo.capacity.resources.v1"
    # Analysts' commands (the pmo CLI writes them).
    SCORING_COMMANDS = "pmo.scoring.commands.v1"
    CAPACITY_COMMANDS = "pmo.capacity.commands.v1"
    # Internal events, one writer each.
    PROJECTS = "pmo.intake.projects.v1"
    DUPLICATES = "pmo.intake.duplicates.v1"
    SCORES = "pmo.scoring.scores.v1"
    SCORING_AUDIT = "pmo.scoring.audit.v1"
    PLANS = "pmo.capacity.plans.v1"
    PLAN_SUMMARIES = "pmo.capacity.summaries.v1"
    SCENARIOS = "pmo.capacity.scenarios.v1"
    # One denormalised record per project, for warehouse sinks (compacted).
    PORTFOLIO_PROJECTS = "pmo.reporting.projects.v1"
    # Every consumer's rejects: original bytes plus machine-readable reasons in headers.
    DEAD_LETTERS = "pmo.deadletter.v1"


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """How a topic is created: partitions and the retention/compaction config."""

    topic: Topic
    partitions: int
    config: dict[str, str]


_WEEK_MS = str(7 * 24 * 3600 * 1000)
_MONTH_MS = str(30 * 24 * 3600 * 1000)

TOPIC_SPECS: tuple[TopicSpec, ...] = (
    TopicSpec(Topic.SUBMISSIONS, 6, {"retention.ms": _WEEK_MS}),
    TopicSpec(Topic.RESOURCES, 3, {"retention.ms": _WEEK_MS}),
    TopicSpec(Topic.SCORING_COMMANDS, 3, {"retention.ms": _MONTH_MS}),
    TopicSpec(Topic.PROJECTS, 6, {"retention.ms": _MONTH_MS}),
    TopicSpec(Topic.DUPLICATES, 6, {"retention.ms": _MONTH_MS}),
    TopicSpec(Topic.SCORES, 6, {"retention.ms": _MONTH_MS}),
    # The audit trail is kept for good.
    TopicSpec(Topic.SCORING_AUDIT, 3, {"retention.ms": "-1"}),
    TopicSpec(Topic.CAPACITY_COMMANDS, 3, {"retention.ms": _WEEK_MS}),
    TopicSpec(Topic.PLANS, 6, {"retention.ms": _MONTH_MS}),
    # One summary per portfolio matters: the latest.
    TopicSpec(Topic.PLAN_SUMMARIES, 3, {"cleanup.policy": "compact", "retention.ms": _MONTH_MS}),
    TopicSpec(Topic.SCENARIOS, 3, {"retention.ms": _MONTH_MS}),
    TopicSpec(Topic.PORTFOLIO_PROJECTS, 6, {"cleanup.policy": "compact", "retention.ms": "-1"}),
    TopicSpec(Topic.DEAD_LETTERS, 3, {"retention.ms": _MONTH_MS}),
)


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Resolves base names to the deployment's actual names."""

    prefix: str = ""

    def __call__(self, topic: Topic) -> str:
        return f"{self.prefix}{topic.value}"

    def base(self, name: str) -> Topic:
        """The registry entry for an actual topic name (inverse of ``__call__``)."""
        return Topic(name.removeprefix(self.prefix))
