-- The warehouse topic is coalesced: a batch marks the projects whose denormalised record
-- changed, and a publisher task turns the marks into records every half second or so, in the
-- transaction that clears them. A project that changes many times meanwhile (a rank moved by
-- each new project) is published once, with its latest state.
CREATE TABLE warehouse_pending (
    project_key text PRIMARY KEY,
    since       timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX warehouse_pending_since ON warehouse_pending (since);
