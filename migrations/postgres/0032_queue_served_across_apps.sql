-- The queue is served across apps, the highest priority and the longest waiting first
-- (store/queue.rs `assign`): its next entry, whatever the app, without sorting the waiting.
CREATE INDEX queue_serving ON queue_entries (priority DESC, seq)
    WHERE session_id IS NULL;
