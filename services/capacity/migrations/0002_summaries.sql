-- The fingerprint of each portfolio's last published summary, so an unchanged summary is not
-- published again.
ALTER TABLE portfolios ADD COLUMN summary_hash text;
