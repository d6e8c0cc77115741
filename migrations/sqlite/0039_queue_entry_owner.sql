-- The token (its name, as in the audit trail) that queued the player. Two platforms use
-- their own player ids, which may be equal: a join finds only its own token's entry, and a
-- poll or leave of another token's entry is answered as if there were none, so one
-- platform can never be handed another's place, session, ticket and key. Entries made
-- before this column (or by a replica not upgraded yet) have the empty name: the first
-- token to join, poll or leave one adopts it, so no player waiting through the upgrade
-- loses their place.
ALTER TABLE queue_entries ADD COLUMN token_name TEXT NOT NULL DEFAULT '';
DROP INDEX queue_by_player;
CREATE INDEX queue_by_player ON queue_entries (app_id, user_id, token_name);
