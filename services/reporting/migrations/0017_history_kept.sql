-- Where the kept history begins, stored (services/reporting/retention.py).
--
-- The history's retention deletes what no instant from its cutoff on reads. The API refused an
-- as_of before the window it was configured with, but a window grown later, or a retention
-- unset, let it answer an instant from before an earlier sweep's cutoff out of what that sweep
-- left: a partial history, answered as if whole. A sweep now records its cutoff here, in a
-- transaction of its own before it deletes anything, and the API refuses an as_of before it
-- whatever its own window. The cutoff only moves forward: two replicas sweeping with clocks or
-- windows apart leave the later of theirs.
--
-- (Version 16 is not used: a migration of that number was withdrawn before it was released,
-- and a database that ran it keeps its record.)

CREATE TABLE history_kept (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    kept_from timestamptz NOT NULL,
    swept_at timestamptz NOT NULL DEFAULT now()
);

-- For BI: the history views answer an instant from kept_from on as it was; before it, what is
-- left is partial. No row: nothing has been swept.
CREATE VIEW v_history_kept AS SELECT kept_from, swept_at FROM history_kept;
GRANT SELECT ON v_history_kept TO pmo_bi;
