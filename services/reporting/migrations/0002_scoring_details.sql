-- What scoring says besides the score: the model, the cause of the change, analysts'
-- overrides; intake's possible-duplicate flags; and the scoring audit trail.

ALTER TABLE projects ADD COLUMN model text;
ALTER TABLE projects ADD COLUMN model_version int;
ALTER TABLE projects ADD COLUMN score_cause text;
ALTER TABLE projects ADD COLUMN override jsonb;
ALTER TABLE projects ADD COLUMN possible_duplicates jsonb NOT NULL DEFAULT '[]';

CREATE TABLE scoring_audit (
    command_id text PRIMARY KEY,
    portfolio  text NOT NULL,
    action     text NOT NULL,
    author     text NOT NULL,
    outcome    text NOT NULL,
    detail     jsonb NOT NULL,
    comment    text NOT NULL,
    at         timestamptz NOT NULL
);
CREATE INDEX scoring_audit_portfolio ON scoring_audit (portfolio, at);
