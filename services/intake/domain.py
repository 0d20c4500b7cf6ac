"""Intake's rules: turning untrusted bytes into a submission, the project lifecycle, and the
decision a submission leads to given the stored project. Pure: no I/O, no clock."""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from pydantic import ValidationError
from rapidfuzz import fuzz, process

from shared.contracts.common import project_key
from shared.contracts.events import (
    PossibleDuplicate,
    ProjectChanged,
    ProjectDuplicates,
    ProjectState,
)
from shared.contracts.inbound import ProjectSubmission, Stage
from shared.errors import Reason, validation_reasons

MAX_PAYLOAD_BYTES = 256 * 1024

S = Stage
# The lifecycle idea → proposal → approved → active → done, with on_hold as a pause (a paused
# project resumes as approved or active) and cancelled/rejected as side exits.
STEPS: dict[Stage, frozenset[Stage]] = {
    S.IDEA: frozenset({S.PROPOSAL, S.ON_HOLD, S.CANCELLED, S.REJECTED}),
    S.PROPOSAL: frozenset({S.APPROVED, S.ON_HOLD, S.CANCELLED, S.REJECTED}),
    S.APPROVED: frozenset({S.ACTIVE, S.ON_HOLD, S.CANCELLED}),
    S.ACTIVE: frozenset({S.DONE, S.ON_HOLD, S.CANCELLED}),
    S.ON_HOLD: frozenset({S.APPROVED, S.ACTIVE, S.CANCELLED}),
    S.DONE: frozenset(),
    S.CANCELLED: frozenset(),
    S.REJECTED: frozenset(),
}


def _reachable(stage: Stage) -> frozenset[Stage]:
    seen: set[Stage] = set()
    todo = list(STEPS[stage])
    while todo:
        nxt = todo.pop()
        if nxt not in seen:
            seen.add(nxt)
            todo.extend(STEPS[nxt])
    return frozenset(seen)


# A move is legal when the lifecycle can get there, possibly through stages nobody reported
# (upstream systems often skip them, and a revision can overtake the one before it). Being a
# closure, the rule is transitive: whatever order valid revisions arrive in, the newest is
# accepted, so every order converges on the state an in-order replay gives.
TRANSITIONS: dict[Stage, frozenset[Stage]] = {stage: _reachable(stage) for stage in Stage}


def transition_allowed(old: Stage, new: Stage) -> bool:
    return old == new or new in TRANSITIONS[old]


def parse_submission(raw: bytes | None, key: bytes | None) -> ProjectSubmission | list[Reason]:
    """The submission in ``raw``, or every reason it is not one. Never raises."""
    if raw is None or len(raw) == 0:
        return [Reason("empty", "the message has no value")]
    if len(raw) > MAX_PAYLOAD_BYTES:
        return [Reason("payload_too_large", f"{len(raw)} bytes; the limit is {MAX_PAYLOAD_BYTES}")]
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [Reason("not_utf8", f"not UTF-8 at byte {exc.start}")]
    try:
        submission = ProjectSubmission.model_validate_json(raw)
    except ValidationError as exc:
        return _document_reasons(exc) or validation_reasons(exc)
    expected = project_key(submission.portfolio, submission.source, submission.external_id)
    if key is not None and key != expected.encode():
        shown = key[:200].decode("utf-8", "replace")
        return [Reason("key_mismatch", f"key {shown!r} is not {expected!r}", "<key>")]
    return submission


def _document_reasons(exc: ValidationError) -> list[Reason]:
    """When the bytes are not a JSON object at all, one reason says so."""
    errors = exc.errors(include_url=False, include_input=False)
    if len(errors) != 1 or errors[0]["loc"]:
        return []
    error = errors[0]
    if error["type"] == "json_invalid":
        deep = "recursion" in str(error["msg"]).lower()
        if deep:
            return [Reason("too_deep", "JSON nested too deeply")]
        return [Reason("not_json", f"not JSON: {error['msg']}")]
    if error["type"] == "model_type":
        return [Reason("not_object", "expected a JSON object")]
    return []


@dataclass(frozen=True, slots=True)
class StoredProject:
    """What intake keeps of a project. ``state`` is None for a tombstone: a withdrawal that
    arrived before any revision of the project did."""

    revision: int
    withdrawn: bool
    state: ProjectState | None
    portfolio: str
    external_id: str


@dataclass(frozen=True, slots=True)
class Accepted:
    event: ProjectChanged
    kind: Literal["accepted"] = "accepted"


@dataclass(frozen=True, slots=True)
class Ignored:
    """Recorded, not an error: a stale revision or the withdrawal of an unknown (or already
    withdrawn) project. ``tombstone``, when set, is what the project is stored as from now on:
    a withdrawal newer than anything stored still advances the revision, so that older
    revisions arriving later are stale, as they would have been in order."""

    code: Literal["stale_revision", "unknown_project"]
    message: str
    tombstone: StoredProject | None = None
    kind: Literal["ignored"] = "ignored"


@dataclass(frozen=True, slots=True)
class Refused:
    reasons: list[Reason]
    kind: Literal["refused"] = "refused"


Decision = Accepted | Ignored | Refused


def _changed(old: ProjectState | None, new: ProjectState) -> list[str]:
    if old is None:
        return sorted(new.model_fields_set | set(type(new).model_fields))
    before: dict[str, Any] = old.model_dump()
    after: dict[str, Any] = new.model_dump()
    return sorted(name for name in after if before.get(name) != after[name])


DUPLICATE_THRESHOLD = 0.85
_CUTOFF = DUPLICATE_THRESHOLD * 100  # as rapidfuzz scores: 0 to 100
DUPLICATES_SHOWN = 3  # the best matches a new project's event names
# Empty slots a portfolio view's list of names may hold beyond as many as it has names, before
# it is packed again (``PortfolioNames._vacate``).
_SLOTS_SLACK = 64
_WORDS = re.compile(r"[^\w]+")


def _normalise(name: str) -> str:
    """``name`` as compared for duplicates: case-folded words, punctuation dropped, in sorted
    order. ``fuzz.ratio`` of two such forms is ``fuzz.token_sort_ratio`` of the names, without
    sorting every name of the portfolio again for every submission (a quarter of the cost)."""
    return " ".join(sorted(_WORDS.sub(" ", name.casefold()).split()))


@dataclass(frozen=True, slots=True)
class PortfolioView:
    """What intake knows of a project's portfolio when it decides: each open project's
    dependencies (by external id)."""

    dependencies: dict[str, list[str]] = field(default_factory=dict)

    def apply(self, event: ProjectChanged) -> None:
        """Keep the view current within a batch."""
        project = event.project
        self.dependencies.pop(project.external_id, None)
        if not event.withdrawn and project.depends_on:
            self.dependencies[project.external_id] = list(project.depends_on)


@dataclass(frozen=True, slots=True)
class PortfolioNames:
    """The names of a portfolio's open projects, as the duplicate search knows them
    (``find_duplicates``): by key, with the revision each was known at."""

    names: dict[str, tuple[str, str]] = field(default_factory=dict)  # key -> (ext id, name)
    # key -> the name as compared for duplicates, normalised once rather than per search
    normalised: dict[str, str] = field(default_factory=dict)
    # key -> the revision of the project the view knows, open or withdrawn: an older change
    # (redelivered, or read again after the view was loaded from intake's table) leaves it be.
    revisions: dict[str, int] = field(default_factory=dict)
    # What ``prepare`` found for a batch's new projects: key -> (its normalised name, its best
    # matches among the names as they were then, best first); the keys whose names changed
    # since, and of those the names there are now (normalised), each in the order they changed.
    prepared: dict[str, tuple[str, list[tuple[str, float]]]] = field(default_factory=dict)
    since: set[str] = field(default_factory=set)
    changed: dict[str, str] = field(default_factory=dict)
    # ``normalised`` as the list ``prepare`` compares with, kept as it changes rather than copied
    # for every batch: a name's slot (None once it leaves, so that the others keep theirs),
    # each slot's key, and each key's slot. A name entered again takes a new slot at the end,
    # as it is entered again at the end of ``normalised``: the slots keep its order.
    _choices: list[str | None] = field(default_factory=list)
    _keys: list[str | None] = field(default_factory=list)
    _slots: dict[str, int] = field(default_factory=dict)

    def add_name(self, key: str, external_id: str, name: str, revision: int = 0) -> None:
        self._vacate(key)
        self.names[key] = (external_id, name)
        self.normalised[key] = normalised = _normalise(name)
        self.revisions[key] = revision
        self._slots[key] = len(self._choices)
        self._choices.append(normalised)
        self._keys.append(key)

    def knows(self, event: ProjectChanged) -> bool:
        """Whether the view has this revision of the project, or a later one."""
        return self.revisions.get(event.project_key, 0) >= event.revision

    def _vacate(self, key: str) -> None:
        slot = self._slots.pop(key, None)
        if slot is None:
            return
        self._choices[slot] = self._keys[slot] = None
        if len(self._choices) > 2 * len(self._slots) + _SLOTS_SLACK:  # mostly empty: packed again
            self._keys[:] = list(self.normalised)
            self._choices[:] = list(self.normalised.values())
            self._slots.clear()
            self._slots.update((k, i) for i, k in enumerate(self._keys) if k is not None)

    def apply(self, event: ProjectChanged) -> None:
        """Follow a change of the portfolio (one the view does not know yet)."""
        key = event.project_key
        self.names.pop(key, None)
        self.normalised.pop(key, None)
        self._vacate(key)
        self.revisions[key] = event.revision
        self.since.add(key)
        self.changed.pop(key, None)  # re-entered at the end, as in ``normalised``
        if not event.withdrawn:
            project = event.project
            self.add_name(key, project.external_id, project.name, event.revision)
            self.changed[key] = self.normalised[key]

    def prepare(self, names: Mapping[str, str], changes: int) -> None:
        """Compare the names of a batch's new projects (key -> name) with the portfolio's all at
        once, before the batch is decided; ``duplicates`` then takes what this found. ``changes``
        bounds how many of the portfolio's names the batch may change before a project is
        decided: of each project's matches, the best ``DUPLICATES_SHOWN`` + 1 + ``changes`` are
        kept, enough whichever of them change. One matrix of comparisons costs a fifth of as
        many single searches (rapidfuzz's vectorised ``cdist``, against ``process.extract``
        once per project)."""
        self.prepared.clear()
        self.since.clear()
        self.changed.clear()
        if not names:
            return
        queries = {key: _normalise(name) for key, name in names.items()}
        best = _best_matches(list(queries.values()), self._choices, DUPLICATES_SHOWN + 1 + changes)
        for (key, query), found in zip(queries.items(), best, strict=True):
            self.prepared[key] = (query, [(self._key_at(j), score) for j, score in found])

    def _key_at(self, slot: int) -> str:
        key = self._keys[slot]
        assert key is not None, "an empty slot matches nothing"
        return key

    def duplicates(self, key: str, name: str) -> list[PossibleDuplicate]:
        """``possible_duplicates`` of ``key`` named ``name`` against the view as it is now:
        what ``prepare`` found, less the names changed since, and those names compared now;
        else searched afresh."""
        query = _normalise(name)
        prepared = self.prepared.get(key)
        if prepared is None or prepared[0] != query:
            return possible_duplicates(key, name, self.names, normalised=self.normalised)
        found = [m for m in prepared[1] if m[0] not in self.since]
        if self.changed:
            found += [
                (other, score)
                for _, score, other in process.extract(
                    query, self.changed, scorer=fuzz.ratio, score_cutoff=_CUTOFF, limit=None
                )
            ]
        # Best first; among equals in the view's order, as ``process.extract`` gives them: the
        # names changed since come after the others, in the order they changed.
        found.sort(key=lambda m: -m[1])
        return _duplicates([m for m in found if m[0] != key][:DUPLICATES_SHOWN], self.names)


# Cells of one comparison matrix at most (queries x names, four bytes each), bounding its
# memory.
_MATRIX_CELLS = 1_000_000


def _best_matches(
    queries: Sequence[str], choices: Sequence[str | None], keep: int
) -> list[list[tuple[int, float]]]:
    """For each query, the (index, similarity) of the ``choices`` at or above the threshold,
    best first and among equals in their order, at most ``keep``. A choice of None is no name
    (it matches nothing).

    The matrix's scores are single precision, which orders them as their double-precision
    values do: a score is 100 (1 - d / n) for whole numbers d <= n (rapidfuzz's Indel ratio,
    n the two names' lengths summed), so two different ones are at least 100 / (n1 n2) apart,
    2.5e-5 for names of up to 1,000 characters, where single precision resolves 7.6e-6 at 100.
    Only the kept pairs are scored again, in double precision, as ``process.extract`` scores
    them. The choices go to rapidfuzz as they are, not copied into an array: a copy touches
    every name once more, and a portfolio's names are most of what a comparison reads."""
    if not choices:
        return [[] for _ in queries]
    rows = max(1, _MATRIX_CELLS // len(choices))
    out: list[list[tuple[int, float]]] = []
    for start in range(0, len(queries), rows):
        part = queries[start : start + rows]
        scores = process.cdist(
            part, choices, scorer=fuzz.ratio, score_cutoff=_CUTOFF, dtype=np.float32
        )
        row, column = np.nonzero(scores)
        order = np.lexsort((column, -scores[row, column], row))  # by query; best; as listed
        row, column = row[order], column[order]
        first = np.searchsorted(row, np.arange(len(part)))  # where each query's matches begin
        kept = np.arange(len(row)) - first[row] < keep  # a match's place among its query's
        rows_kept, columns_kept = row[kept].tolist(), column[kept].tolist()
        exact = process.cpdist(
            [part[r] for r in rows_kept],
            [choices[c] for c in columns_kept],
            scorer=fuzz.ratio,
            dtype=np.float64,
        ).tolist()
        bounds = np.searchsorted(row[kept], np.arange(len(part) + 1)).tolist()
        for a, b in itertools.pairwise(bounds):
            out.append(list(zip(columns_kept[a:b], exact[a:b], strict=True)))
    return out


def _duplicates(
    matches: Sequence[tuple[str, float]], names: Mapping[str, tuple[str, str]]
) -> list[PossibleDuplicate]:
    return [
        PossibleDuplicate(
            project_key=other,
            external_id=names[other][0],
            name=names[other][1],
            similarity=round(score / 100, 3),
        )
        for other, score in matches
    ]


def dependency_cycle(
    external_id: str, depends_on: Sequence[str], graph: Mapping[str, Sequence[str]]
) -> list[str] | None:
    """The cycle ``external_id`` would close by depending on ``depends_on``, as a path from it
    back to itself, or None."""
    stack: list[tuple[str, list[str]]] = [(d, [external_id, d]) for d in reversed(depends_on)]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == external_id:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((n, [*path, n]) for n in reversed(graph.get(node, ())))
    return None


def possible_duplicates(
    key: str,
    name: str,
    names: Mapping[str, tuple[str, str]],
    limit: int = DUPLICATES_SHOWN,
    normalised: Mapping[str, str] | None = None,
) -> list[PossibleDuplicate]:
    """Projects of the portfolio whose names match ``name`` closely (word order ignored: the
    token-sort ratio of the normalised names).

    ``normalised`` (key -> normalised name, as ``PortfolioNames`` keeps it) spares normalising
    every name of the portfolio for every submission."""
    if normalised is None:
        normalised = {k: _normalise(n) for k, (_, n) in names.items()}
    found = process.extract(
        _normalise(name),
        normalised,
        scorer=fuzz.ratio,
        score_cutoff=_CUTOFF,
        limit=limit + 1,  # the project itself may be among them
    )
    return _duplicates([(other, score) for _, score, other in found if other != key][:limit], names)


def opens(event: ProjectChanged) -> bool:
    """Whether the change opens the project: its first revision, or one after it was
    withdrawn. An opened project is searched for possible duplicates."""
    return event.previous_stage is None and not event.withdrawn


def find_duplicates(
    view: PortfolioNames, changes: Sequence[ProjectChanged]
) -> list[ProjectDuplicates]:
    """The possible duplicates of each project that one of a portfolio's ``changes`` (in the
    order intake applied them) opens, among the names in ``view`` as they stand at that change
    (the project's own name aside). ``view`` follows each change it does not know yet, and is
    left with them; one it knows (it was loaded from intake's table, which is ahead of the
    changes read back) leaves it as it is."""
    view.prepare({c.project_key: c.project.name for c in changes if opens(c)}, len(changes))
    found = []
    for change in changes:
        if opens(change):
            found.append(
                ProjectDuplicates(
                    project_key=change.project_key,
                    revision=change.revision,
                    possible_duplicates=view.duplicates(change.project_key, change.project.name),
                )
            )
        if not view.knows(change):
            view.apply(change)
    return found


def decide(
    submission: ProjectSubmission,
    stored: StoredProject | None,
    portfolio: PortfolioView = PortfolioView(),
) -> Decision:
    """What ``submission`` does to the project stored as ``stored`` (None if unknown), given
    what is known of its portfolio."""
    key = project_key(submission.portfolio, submission.source, submission.external_id)
    if stored is not None and submission.revision <= stored.revision:
        return Ignored(
            "stale_revision",
            f"revision {submission.revision} is not newer than the stored {stored.revision}",
        )
    if submission.action == "withdraw":
        if stored is None or stored.withdrawn or stored.state is None:
            tombstone = StoredProject(
                revision=submission.revision,
                withdrawn=True,
                state=stored.state if stored is not None else None,
                portfolio=submission.portfolio,
                external_id=submission.external_id,
            )
            return Ignored("unknown_project", f"no project {key} to withdraw", tombstone)
        event = ProjectChanged(
            project_key=key,
            portfolio=submission.portfolio,
            revision=submission.revision,
            submission_id=str(submission.submission_id),
            occurred_at=submission.submitted_at,
            withdrawn=True,
            previous_stage=stored.state.stage,
            changed=["withdrawn"],
            project=stored.state,
        )
        return Accepted(event)
    assert submission.project is not None
    state = ProjectState(
        **submission.project.model_dump(),
        portfolio=submission.portfolio,
        source=submission.source,
        external_id=submission.external_id,
    )
    previous = stored.state if stored is not None and not stored.withdrawn else None
    if previous is not None and not transition_allowed(previous.stage, state.stage):
        return Refused(
            [
                Reason(
                    "illegal_transition",
                    f"stage cannot move from {previous.stage.value} to {state.stage.value}",
                    "project.stage",
                )
            ]
        )
    cycle = dependency_cycle(submission.external_id, state.depends_on, portfolio.dependencies)
    if cycle is not None:
        return Refused(
            [
                Reason(
                    "dependency_cycle",
                    "dependencies form a cycle: " + " -> ".join(cycle),
                    "project.depends_on",
                )
            ]
        )
    return Accepted(
        ProjectChanged(
            project_key=key,
            portfolio=submission.portfolio,
            revision=submission.revision,
            submission_id=str(submission.submission_id),
            occurred_at=submission.submitted_at,
            previous_stage=previous.stage if previous else None,
            changed=_changed(previous, state),
            project=state,
        )
    )
