-- The recovery log learns two things (issue #15):
-- * outcome 'skipped': a restart or reset decided on the book's status but not sent, because
--   the phone, re-read from the control plane right before acting (chapter 4.3.2), was no
--   longer a candidate (stopped, frozen, being restarted by someone else…);
-- * detail: what was done besides the action, e.g. which of the phone's own properties a
--   reset re-applied (a reset restores factory settings, chapter 4.3.5), or why it was skipped.
ALTER TABLE recoveries DROP CONSTRAINT recoveries_outcome_check;
ALTER TABLE recoveries ADD CONSTRAINT recoveries_outcome_check
    CHECK (outcome IN ('pending', 'succeeded', 'failed', 'error', 'dry_run', 'skipped'));
ALTER TABLE recoveries ADD COLUMN detail TEXT;
