-- The session a quit ended on this phone. A phone's heartbeat names no session once its game
-- has exited (chapter 6.4), so a quit frees the phone at once: the quit clears
-- `heartbeat_session_id` when it names the session that ended, and records that session
-- here, so that a heartbeat sent just before the quit but written just after it does not
-- name the ended session again (the heartbeat upsert leaves it out). Before, the phone
-- stayed `occupied` (a pinned mint: 409 CPHUB.PHONE_BUSY) until its next heartbeat without
-- a session was flushed, up to one heartbeat interval and one flush.
ALTER TABLE phones ADD COLUMN heartbeat_ended_session_id TEXT;
