-- The usage query bounds its scan of sessions_by_start by the longest recorded session
-- (a session overlapping a window started at most that long before it). This index makes
-- max(duration_seconds) a lookup instead of a scan.
CREATE INDEX sessions_by_duration ON sessions (duration_seconds);
