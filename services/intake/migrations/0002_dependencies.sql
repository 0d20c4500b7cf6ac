-- Dependencies and external ids as columns, for cycle detection and duplicate-name checks
-- across a portfolio without reading every project's document.

ALTER TABLE projects ADD COLUMN external_id text;
ALTER TABLE projects ADD COLUMN depends_on text[] NOT NULL DEFAULT '{}';

UPDATE projects
SET external_id = state ->> 'external_id',
    depends_on = ARRAY(SELECT jsonb_array_elements_text(state -> 'depends_on'));

ALTER TABLE projects ALTER COLUMN external_id SET NOT NULL;
