-- The session's event log learns two things (issue #16):
-- * reconnects: a sign check admitted again while its session is verified or playing
--   (access.reconnect = "while_live") is a line of the log, status 2 and outcome 'admitted'.
--   Status 2 is cphub's, not chapter 6's (0 enter, 1 quit). Being outside 'accepted', these
--   lines are outside session_events_once: a session may reconnect many times.
-- * truncated: error_msg was cut to its bound instead of the event being refused. Refusing
--   it would lose a billing event, as the phone sends the same event again and again.
ALTER TABLE session_events DROP CONSTRAINT session_events_status_check;
ALTER TABLE session_events ADD CONSTRAINT session_events_status_check
    CHECK (status IN (0, 1, 2));
ALTER TABLE session_events DROP CONSTRAINT session_events_outcome_check;
ALTER TABLE session_events ADD CONSTRAINT session_events_outcome_check
    CHECK (outcome IN ('accepted', 'conflict', 'admitted'));
ALTER TABLE session_events ADD COLUMN truncated BOOLEAN NOT NULL DEFAULT false;
