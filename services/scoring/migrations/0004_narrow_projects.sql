-- A rescore rewrites each project's score, explanation and published ranking, and an UPDATE
-- writes the row whole: the project's state document (about half of each row) moves to a table
-- of its own, written only when the project is revised. Explanations and published overrides
-- become json: they are stored to be handed back as written, never queried inside, and json
-- keeps the text instead of converting it to and from jsonb's binary form. ``rank`` was always
-- equal to ``published_rank``.

CREATE TABLE project_states (
    project_key text PRIMARY KEY,
    state       jsonb NOT NULL
);

INSERT INTO project_states (project_key, state) SELECT project_key, state FROM projects;

ALTER TABLE projects DROP COLUMN state, DROP COLUMN rank;
-- Rewrites the table, without the dropped columns' data.
ALTER TABLE projects
    ALTER COLUMN explanation TYPE json USING explanation::json,
    ALTER COLUMN published_override TYPE json USING published_override::json;
