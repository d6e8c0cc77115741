-- An assignment never handed out is undone when the first poll finds its phone no longer
-- serving (silent, recovering, drained) or its hold lapsed: the entry waits again and is
-- given another phone. Each assignment is its own queue.assigned, so the event's id names
-- the session too; by the queue id alone, the second was dropped as a duplicate of the
-- first, and a consumer never learnt of the session the player actually got.
CREATE OR REPLACE FUNCTION webhook_queue_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE $q$
        INSERT INTO webhook_events (event_id, type, subject, occurred_at, data)
        SELECT 'evt_queue.assigned_' || n.queue_id || '_' || n.session_id, 'queue.assigned',
            n.session_id, coalesce(n.assigned_at, n.joined_at),
            jsonb_build_object('queue_id', n.queue_id, 'app_id', n.app_id, 'user_id', n.user_id,
                'priority', n.priority, 'session_id', n.session_id, 'phone_id', n.phone_id,
                'joined_at', webhook_ms(n.joined_at),
                'assigned_at', webhook_ms(n.assigned_at))::text
        FROM before AS o JOIN after AS n USING (seq)
        WHERE o.session_id IS NULL AND n.session_id IS NOT NULL
        ORDER BY n.seq
        ON CONFLICT (event_id) DO NOTHING
    $q$;
    RETURN NULL;
END $$;
