-- A player's own entries in an app's queue, for a join to find the entry a retried or
-- repeated join made (POST /api/v1/queue answers it again instead of queueing the player
-- twice: the first entry, never polled, would hold a place and then a phone for nobody).
CREATE INDEX queue_by_player ON queue_entries (app_id, user_id);
