-- The session's event log learns two things (issue #16):
-- * reconnects: a sign check admitted again while its session is verified or playing
--   (access.reconnect = "while_live") is a line of the log, status 2 and outcome 'admitted'.
--   Status 2 is cphub's, not chapter 6's (0 enter, 1 quit). Being outside 'accepted', these
--   lines are outside session_events_once: a session may reconnect many times.
-- * truncated: error_msg was cut to its bound instead of the event being refused. Refusing
--   it would lose a billing event, as the phone sends the same event again and again.
-- SQLite cannot change a CHECK constraint in place: the table is rebuilt, ids kept.
CREATE TABLE session_events_v6 (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    session_id  TEXT NOT NULL,
    status      INTEGER NOT NULL CHECK (status IN (0, 1, 2)), -- 0 enter, 1 quit, 2 reconnect
    phone_id    TEXT NOT NULL,
    app_id      TEXT NOT NULL,
    event_time  INTEGER NOT NULL,
    run_time    INTEGER,
    error_msg   TEXT,
    outcome     TEXT NOT NULL CHECK (outcome IN ('accepted', 'conflict', 'admitted')),
    received_at INTEGER NOT NULL,
    truncated   INTEGER NOT NULL DEFAULT 0 CHECK (truncated IN (0, 1))
) STRICT;
INSERT INTO session_events_v6
    (id, session_id, status, phone_id, app_id, event_time, run_time, error_msg, outcome,
     received_at)
SELECT id, session_id, status, phone_id, app_id, event_time, run_time, error_msg, outcome,
       received_at
FROM session_events;
DROP TABLE session_events;
ALTER TABLE session_events_v6 RENAME TO session_events;
CREATE UNIQUE INDEX session_events_once ON session_events (session_id, status)
    WHERE outcome = 'accepted';
CREATE INDEX session_events_by_session ON session_events (session_id, id);
