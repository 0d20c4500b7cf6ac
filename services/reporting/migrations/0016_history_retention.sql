-- The history's retention (services/reporting/retention.py) deletes, project by project, the
-- rank moves recorded before its cutoff but the newest ranking's. Through the moves' index by
-- ranking version it could only find them by reading every move the project has, the whole
-- window kept, on every sweep; through this one it reads the moves before the cutoff alone,
-- what has aged out since the last sweep and the one move a project keeps from before it.
-- (The versions' index is by project and time already: projects_history_key.) Building it
-- reads the whole rank history once, and blocks rank moves meanwhile.
CREATE INDEX rank_history_time ON rank_history (project_key, valid_from) INCLUDE (ranking_version);
