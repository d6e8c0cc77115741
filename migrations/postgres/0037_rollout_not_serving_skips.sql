-- How many times a rollout skipped the phone because it was still not serving at the drain
-- deadline (stopped or frozen by the operator, silent, being recovered; chapter 4.3.1).
-- A skipped phone is taken again by a later batch, so one the operator keeps stopped used
-- to go drained → skipped → drained for good and the rollout never ended. At the third
-- such skip the phone fails instead, saying why; the failure says nothing of the version,
-- so it is not counted against the rollout's `max_failures`.
ALTER TABLE rollout_phones ADD COLUMN not_serving_skips BIGINT NOT NULL DEFAULT 0;
