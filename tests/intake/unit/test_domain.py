from __future__ import annotations

import json
import random
import re
import uuid

import pytest
from rapidfuzz import fuzz, process

from services.intake import domain
from services.intake.domain import (
    DUPLICATE_THRESHOLD,
    MAX_PAYLOAD_BYTES,
    TRANSITIONS,
    Accepted,
    Ignored,
    PortfolioNames,
    Refused,
    StoredProject,
    decide,
    dependency_cycle,
    find_duplicates,
    opens,
    parse_submission,
    possible_duplicates,
    transition_allowed,
)
from shared.contracts.common import project_key
from shared.contracts.events import ProjectChanged, ProjectDuplicates, ProjectState
from shared.contracts.inbound import ProjectSubmission, Stage
from shared.errors import Reason
from tests.helpers import key_of, submission


def parsed(message: dict[str, object]) -> ProjectSubmission:
    result = parse_submission(json.dumps(message).encode(), key_of(message))  # type: ignore[arg-type]
    assert isinstance(result, ProjectSubmission), result
    return result


def reasons(raw: bytes, key: bytes | None = None) -> list[Reason]:
    result = parse_submission(raw, key)
    assert isinstance(result, list), result
    return result


def test_the_documented_example_parses() -> None:
    sub = parsed(submission("PRJ-42", revision=3, depends_on=["PRJ-40"]))
    assert sub.project is not None
    assert sub.project.depends_on == ["PRJ-40"]
    assert sub.project.duration_months == 3


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "empty"),
        (b"\xff\xfe\x00", "not_utf8"),
        (b"{not json", "not_json"),
        (b"[1, 2]", "not_object"),
        (b"[" * 100_000 + b"]" * 100_000, "too_deep"),
        (b" " * (MAX_PAYLOAD_BYTES + 1), "payload_too_large"),
    ],
)
def test_unreadable_bytes_are_refused_with_a_reason(raw: bytes, code: str) -> None:
    assert [r.code for r in reasons(raw)] == [code]


def test_field_errors_name_the_path() -> None:
    message = submission("PRJ-1", stage="someday", risk=9)
    found = {(r.path, r.code) for r in reasons(json.dumps(message).encode())}
    assert ("project.stage", "enum") in found
    assert ("project.risk", "less_than_equal") in found


def test_negative_fte_is_refused() -> None:
    message = submission("PRJ-1", demand=[{"role": "qa", "fte": -1, "start_month": 0, "months": 1}])
    found = reasons(json.dumps(message).encode())
    assert [(r.path, r.code) for r in found] == [("project.demand.0.fte", "greater_than")]


def test_a_deadline_before_the_earliest_start_is_refused() -> None:
    message = submission("PRJ-1", earliest_start="2027-06", deadline="2027-01")
    found = reasons(json.dumps(message).encode())
    assert any("deadline is before earliest_start" in r.message for r in found)


def test_a_key_that_does_not_match_the_body_is_refused() -> None:
    message = submission("PRJ-1")
    assert [r.code for r in reasons(json.dumps(message).encode(), b"retail/jira/OTHER")] == [
        "key_mismatch"
    ]


def test_upsert_without_project_is_refused() -> None:
    message = submission("PRJ-1")
    del message["project"]
    assert any("needs a project" in r.message for r in reasons(json.dumps(message).encode()))


def _stored(stage: Stage, revision: int = 1, withdrawn: bool = False) -> StoredProject:
    sub = parsed(submission("PRJ-1", stage=stage.value, revision=revision))
    assert sub.project is not None
    state = ProjectState(
        **sub.project.model_dump(), portfolio="retail", source="jira", external_id="PRJ-1"
    )
    return StoredProject(
        revision=revision,
        withdrawn=withdrawn,
        state=state,
        portfolio="retail",
        external_id="PRJ-1",
    )


def test_every_stage_may_stay_where_it_is() -> None:
    assert all(transition_allowed(stage, stage) for stage in Stage)


def test_terminal_stages_go_nowhere() -> None:
    for stage in (Stage.DONE, Stage.CANCELLED, Stage.REJECTED):
        assert TRANSITIONS[stage] == frozenset()


def test_stages_may_be_skipped_but_never_reversed() -> None:
    assert transition_allowed(Stage.APPROVED, Stage.DONE)
    assert transition_allowed(Stage.IDEA, Stage.ACTIVE)
    assert transition_allowed(Stage.ACTIVE, Stage.ON_HOLD)
    assert transition_allowed(Stage.ON_HOLD, Stage.ACTIVE)
    assert not transition_allowed(Stage.ACTIVE, Stage.PROPOSAL)
    assert not transition_allowed(Stage.ON_HOLD, Stage.IDEA)
    assert not transition_allowed(Stage.APPROVED, Stage.REJECTED)
    assert not transition_allowed(Stage.DONE, Stage.ACTIVE)


def test_the_rule_is_transitive() -> None:
    for a in Stage:
        for b in TRANSITIONS[a]:
            assert TRANSITIONS[b] <= TRANSITIONS[a] | {a}


def test_an_illegal_transition_names_both_stages() -> None:
    decision = decide(parsed(submission("PRJ-1", stage="idea", revision=2)), _stored(Stage.ACTIVE))
    assert isinstance(decision, Refused)
    assert decision.reasons[0].code == "illegal_transition"
    assert "from active to idea" in decision.reasons[0].message


def test_a_legal_transition_is_accepted_with_what_changed() -> None:
    decision = decide(
        parsed(submission("PRJ-1", stage="approved", revision=2)), _stored(Stage.PROPOSAL)
    )
    assert isinstance(decision, Accepted)
    assert decision.event.previous_stage == Stage.PROPOSAL
    assert decision.event.changed == ["stage"]
    assert decision.event.revision == 2


@pytest.mark.parametrize("revision", [0, 1])
def test_stale_or_equal_revisions_are_ignored(revision: int) -> None:
    decision = decide(parsed(submission("PRJ-1", revision=revision)), _stored(Stage.PROPOSAL))
    assert isinstance(decision, Ignored)
    assert decision.code == "stale_revision"


def test_withdrawing_an_unknown_project_is_recorded_not_refused() -> None:
    decision = decide(parsed(submission("PRJ-9", action="withdraw")), None)
    assert isinstance(decision, Ignored)
    assert decision.code == "unknown_project"


def test_a_withdrawal_that_overtakes_the_project_makes_its_earlier_revisions_stale() -> None:
    # Revision 4 withdraws a project whose revisions 1-3 are still on their way: in order, the
    # project would end withdrawn, so it must here too.
    first = decide(parsed(submission("PRJ-9", action="withdraw", revision=4)), None)
    assert isinstance(first, Ignored)
    assert first.tombstone is not None
    assert (first.tombstone.revision, first.tombstone.withdrawn) == (4, True)
    assert first.tombstone.state is None
    for revision in (1, 2, 3):
        late = decide(parsed(submission("PRJ-9", revision=revision)), first.tombstone)
        assert isinstance(late, Ignored)
        assert late.code == "stale_revision"
    # A newer revision reopens it, as it would have in order.
    reopened = decide(parsed(submission("PRJ-9", revision=5)), first.tombstone)
    assert isinstance(reopened, Accepted)
    assert reopened.event.previous_stage is None


def test_withdrawing_a_withdrawn_project_again_advances_its_revision() -> None:
    withdrawn = _stored(Stage.PROPOSAL, revision=3, withdrawn=True)
    again = decide(parsed(submission("PRJ-1", action="withdraw", revision=6)), withdrawn)
    assert isinstance(again, Ignored)
    assert again.tombstone is not None
    assert again.tombstone.revision == 6
    assert again.tombstone.state == withdrawn.state
    late = decide(parsed(submission("PRJ-1", revision=5)), again.tombstone)
    assert isinstance(late, Ignored)
    assert late.code == "stale_revision"


def test_withdrawal_carries_the_last_state() -> None:
    decision = decide(
        parsed(submission("PRJ-1", action="withdraw", revision=5)), _stored(Stage.PROPOSAL)
    )
    assert isinstance(decision, Accepted)
    assert decision.event.withdrawn
    assert decision.event.project.name == "Project PRJ-1"


def test_event_ids_come_from_the_submission() -> None:
    sid = str(uuid.uuid4())
    decision = decide(parsed(submission("PRJ-1", submission_id=sid)), None)
    assert isinstance(decision, Accepted)
    assert decision.event.submission_id == sid


def test_demand_longer_than_the_window_is_refused() -> None:
    message = submission(
        "PRJ-1",
        earliest_start="2027-01",
        deadline="2027-03",
        demand=[{"role": "qa", "fte": 1, "start_month": 2, "months": 2}],
    )
    found = reasons(json.dumps(message).encode())
    assert any("demand runs 4 months but the window" in r.message for r in found)


def test_dependency_cycles_are_found_with_their_path() -> None:
    graph = {"B": ["C"], "C": ["A"], "D": ["B"]}
    assert dependency_cycle("A", ["B"], graph) == ["A", "B", "C", "A"]
    assert dependency_cycle("A", ["A"], {}) == ["A", "A"]
    assert dependency_cycle("A", ["D"], {"D": ["E"]}) is None


def test_duplicate_names_ignore_case_punctuation_and_word_order() -> None:
    names = {"k1": ("A", "Checkout Rewrite"), "k2": ("B", "Store inventory sync")}
    (match,) = possible_duplicates("k9", "rewrite: checkout", names)
    assert (match.external_id, match.similarity) == ("A", 1.0)
    assert possible_duplicates("k1", "Checkout rewrite", names) == []  # not itself


def test_duplicate_similarity_is_the_token_sort_ratio_of_the_names() -> None:
    rnd = random.Random(7)
    words = ["Checkout", "rewrite", "store", "inventory", "sync", "CRM", "data-lake", "v2"]
    names = {f"k{i}": (f"E{i}", " ".join(rnd.sample(words, rnd.randint(1, 4)))) for i in range(200)}
    view = PortfolioNames()
    for key, (external_id, name) in names.items():
        view.add_name(key, external_id, name)
    for _ in range(50):
        query = " ".join(rnd.sample(words, rnd.randint(1, 4)))
        found = possible_duplicates("new", query, names, limit=200, normalised=view.normalised)
        expected = process.extract(
            query,
            {k: n for k, (_, n) in names.items()},
            scorer=fuzz.token_sort_ratio,  # words compared in sorted order, on the names as cased
            processor=lambda s: " ".join(re.sub(r"[^\w]+", " ", s.casefold()).split()),
            score_cutoff=DUPLICATE_THRESHOLD * 100,
            limit=200,
        )
        assert {(d.project_key, d.similarity) for d in found} == {
            (k, round(score / 100, 3)) for _, score, k in expected
        }


def key_in_retail(external_id: str) -> str:
    return project_key("retail", "jira", external_id)


def test_a_batch_compared_at_once_finds_what_a_search_per_project_finds() -> None:
    """``find_duplicates`` compares a batch's new projects with the portfolio in one matrix
    (``PortfolioNames.prepare``); each new project then gets the same matches, in the same
    order (ties included), as searching the names as they stand at that project's change, with
    the projects the batch opened, renamed and withdrew before it."""
    rnd = random.Random(11)
    words = ["checkout", "rewrite", "store", "sync", "crm", "ledger", "cloud", "v2", "emea"]

    def name() -> str:
        return " ".join(rnd.sample(vocabulary, rnd.randint(1, 3)))

    def accept(stored: dict[str, StoredProject], sub: ProjectSubmission) -> ProjectChanged | None:
        key = key_in_retail(sub.external_id)
        decision = decide(sub, stored.get(key))
        if not isinstance(decision, Accepted):
            return None
        event = decision.event
        stored[key] = StoredProject(
            event.revision, event.withdrawn, event.project, "retail", sub.external_id
        )
        return event

    compared = searched = 0
    for trial in range(60):
        # Some portfolios of few words: many equal names, more matches than are kept.
        vocabulary = words[: 3 if trial % 3 == 0 else len(words)]
        view, step = PortfolioNames(), PortfolioNames()  # the batch's way, one at a time
        stored: dict[str, StoredProject] = {}
        for i in range(rnd.randint(0, 60)):
            event = accept(stored, parsed(submission(f"E{i}", name=name())))
            assert event is not None
            find_duplicates(view, [event])
            find_duplicates(step, [event])
        revisions = {key: p.revision for key, p in stored.items()}
        batch: list[ProjectChanged] = []
        for j in range(rnd.randint(1, 4 if trial % 3 == 0 else 30)):
            if rnd.random() < 0.6 or not stored:  # a new project, perhaps opened twice
                external_id = f"N{rnd.randint(0, j)}"
            else:  # an existing one, or one the batch opened: renamed, or withdrawn
                external_id = rnd.choice([p.external_id for p in stored.values()])
            key = key_in_retail(external_id)
            revisions[key] = revisions.get(key, 0) + 1
            withdraw = key in revisions and rnd.random() < 0.15
            action = "withdraw" if withdraw else "upsert"
            named = {} if withdraw else {"name": name()}
            sub = parsed(submission(external_id, revision=revisions[key], action=action, **named))
            event = accept(stored, sub)
            if event is not None:
                batch.append(event)
        expected = []
        for event in batch:
            if opens(event):
                expected.append(
                    ProjectDuplicates(
                        project_key=event.project_key,
                        revision=event.revision,
                        possible_duplicates=possible_duplicates(
                            event.project_key,
                            event.project.name,
                            step.names,
                            normalised=step.normalised,
                        ),
                    )
                )
            step.apply(event)
        found = find_duplicates(view, batch)
        assert found == expected
        searched += len(found)
        compared += sum(len(f.possible_duplicates) for f in found)
        assert view.names == step.names
    assert searched > 200  # the batches' new projects
    assert compared > 150  # many matches compared, ties among them


def test_the_names_compared_follow_the_view_through_renames_and_withdrawals(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A view keeps the list of names it compares with as its names change (each in a slot,
    emptied when the name leaves, the list packed again when mostly empty): the names in it
    are the view's, in the view's order, and a search prepared on it finds what a search of
    the view's names finds."""
    monkeypatch.setattr(domain, "_SLOTS_SLACK", 4)  # packed often
    rnd = random.Random(3)
    words = ["checkout", "rewrite", "store", "sync", "crm", "ledger", "emea"]
    view = PortfolioNames()
    for i in range(30):
        view.add_name(key_in_retail(f"E{i}"), f"E{i}", " ".join(rnd.sample(words, 2)))
    stored: dict[str, StoredProject] = {}
    packed = 0
    for step in range(400):
        external_id = f"E{rnd.randrange(40)}"
        key = key_in_retail(external_id)
        known = stored.get(key)
        withdraw = known is not None and not known.withdrawn and rnd.random() < 0.3
        named = {} if withdraw else {"name": " ".join(rnd.sample(words, rnd.randint(1, 3)))}
        sub = parsed(
            submission(
                external_id,
                revision=step + 2,
                action="withdraw" if withdraw else "upsert",
                **named,
            )
        )
        decision = decide(sub, known)
        assert isinstance(decision, Accepted)
        event = decision.event
        stored[key] = StoredProject(
            event.revision, event.withdrawn, event.project, "retail", external_id
        )
        before = len(view._choices)
        view.apply(event)
        packed += len(view._choices) < before
        assert [c for c in view._choices if c is not None] == list(view.normalised.values())
        assert [k for k in view._keys if k is not None] == list(view.normalised)
        assert all(view._keys[slot] == key for key, slot in view._slots.items())
    assert packed > 5
    query = " ".join(words[:2])
    view.prepare({"new": query}, changes=0)
    assert view.duplicates("new", query) == possible_duplicates(
        "new", query, view.names, normalised=view.normalised
    )
    assert view.duplicates("new", query)  # some names match


def test_a_large_batch_is_compared_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    """The comparison matrix is cut into rows of a bounded size; the parts find what the whole
    does."""
    rnd = random.Random(5)
    words = ["checkout", "rewrite", "store", "sync", "crm", "ledger"]
    view = PortfolioNames()
    for i in range(40):
        view.add_name(f"k{i}", f"E{i}", " ".join(rnd.sample(words, rnd.randint(1, 3))))
    batch = {f"n{i}": " ".join(rnd.sample(words, rnd.randint(1, 3))) for i in range(25)}
    view.prepare(batch, 100)
    whole = dict(view.prepared)
    monkeypatch.setattr(domain, "_MATRIX_CELLS", 90)  # rows of two queries against 40 names
    view.prepare(batch, 100)
    assert view.prepared == whole
    assert sum(len(matches) for _, matches in whole.values()) > 20


def test_what_is_kept_of_a_prepared_search_is_the_best_and_enough() -> None:
    """``prepare`` keeps each project's best matches, as many as the batch's changes could take
    away and the three shown: here six near and four exact names, then a batch that renames
    the first three exact ones before a project of that name opens."""
    view = PortfolioNames()
    for i in range(6):
        view.add_name(f"near{i}", f"N{i}", "Checkout rewrit")
    for i in range(4):
        view.add_name(f"same{i}", f"S{i}", "Checkout rewrite")
    view.prepare({"new": "checkout REWRITE"}, changes=4)
    for i in range(3):
        renamed = decide(parsed(submission(f"S{i}", name=f"Store sync {i}")), None)
        assert isinstance(renamed, Accepted)
        view.apply(renamed.event.model_copy(update={"project_key": f"same{i}"}))
    found = view.duplicates("new", "checkout REWRITE")
    assert [(d.project_key, d.similarity) for d in found] == [
        ("same3", 1.0),
        ("near0", 0.968),
        ("near1", 0.968),
    ]
    assert found == possible_duplicates(
        "new", "checkout REWRITE", view.names, normalised=view.normalised
    )


def test_a_name_the_batch_gave_and_then_withdrew_is_no_match() -> None:
    view = PortfolioNames()
    view.add_name(key_in_retail("W"), "W", "Ledger")
    view.prepare({key_in_retail("NEW"): "Checkout rewrite"}, changes=2)
    renamed = decide(parsed(submission("W", revision=2, name="Checkout rewrite")), None)
    assert isinstance(renamed, Accepted)
    view.apply(renamed.event)
    assert [d.external_id for d in view.duplicates(key_in_retail("NEW"), "Checkout rewrite")] == [
        "W"
    ]
    withdrawn = decide(
        parsed(submission("W", revision=3, action="withdraw")),
        StoredProject(2, False, renamed.event.project, "retail", "W"),
    )
    assert isinstance(withdrawn, Accepted)
    view.apply(withdrawn.event)
    assert view.duplicates(key_in_retail("NEW"), "Checkout rewrite") == []


def test_equal_scores_are_equal_however_they_were_found() -> None:
    """A match found by the batch's matrix and one the batch renamed into the view tie when
    their exact scores do: the matrix's single-precision scores only choose what is kept."""
    view = PortfolioNames()
    view.add_name("first", "A", "Checkout rewrit")
    view.add_name(key_in_retail("B"), "B", "zzz")
    view.prepare({"new": "Checkout rewrite"}, changes=2)
    renamed = decide(parsed(submission("B", revision=2, name="Checkout rewrit")), None)
    assert isinstance(renamed, Accepted)
    view.apply(renamed.event)
    found = view.duplicates("new", "Checkout rewrite")
    assert [d.project_key for d in found] == ["first", key_in_retail("B")]  # the view's order
    assert found == possible_duplicates(
        "new", "Checkout rewrite", view.names, normalised=view.normalised
    )
