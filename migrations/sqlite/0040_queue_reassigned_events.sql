-- An assignment never handed out is undone when the first poll finds its phone no longer
-- serving (silent, recovering, drained) or its hold lapsed: the entry waits again and is
-- given another phone. Each assignment is its own queue.assigned, so the event's id names
-- the session too; by the queue id alone, the second was dropped as a duplicate of the
-- first, and a consumer never learnt of the session the player actually got.
DROP TRIGGER webhook_queue_assigned;
CREATE TRIGGER webhook_queue_assigned AFTER UPDATE OF session_id ON queue_entries
WHEN OLD.session_id IS NULL AND NEW.session_id IS NOT NULL
BEGIN
    INSERT INTO webhook_events (event_id, type, subject, occurred_at, recorded_at, data)
    SELECT 'evt_queue.assigned_' || NEW.queue_id || '_' || NEW.session_id, 'queue.assigned',
        NEW.session_id, coalesce(NEW.assigned_at, NEW.joined_at),
        CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER),
        json_object('queue_id', NEW.queue_id, 'app_id', NEW.app_id, 'user_id', NEW.user_id,
            'priority', NEW.priority, 'session_id', NEW.session_id, 'phone_id', NEW.phone_id,
            'joined_at', NEW.joined_at, 'assigned_at', NEW.assigned_at)
    WHERE true
    ON CONFLICT (event_id) DO NOTHING;
END;
