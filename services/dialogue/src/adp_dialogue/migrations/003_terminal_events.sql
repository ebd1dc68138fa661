-- dialogue: every ended discussion has exactly one terminal event, its last (clients' event streams close
-- after it). Discussions that ended before terminal events existed get theirs, built from their row.
WITH ended AS (
    UPDATE discussions d SET next_seq = d.next_seq + 1
     WHERE d.status IN ('completed', 'stopped', 'resolved', 'failed')
       AND NOT EXISTS (
           SELECT 1 FROM events e
            WHERE e.discussion_id = d.id
              AND e.event IN ('discussion-completed', 'discussion-stopped', 'discussion-resolved', 'discussion-failed'))
    RETURNING d.id, d.next_seq - 1 AS seq, d.status, d.current_round, d.resolution, d.error)
INSERT INTO events (discussion_id, seq, event, data)
SELECT id, seq, 'discussion-' || status,
       CASE status
           WHEN 'resolved' THEN jsonb_build_object(
               'status', status, 'resolution', resolution, 'finalAnswer', coalesce(resolution ->> 'finalAnswer', ''))
           WHEN 'failed' THEN jsonb_build_object(
               'status', status, 'code', coalesce(error ->> 'code', 'INTERNAL_ERROR'),
               'message', coalesce(error ->> 'message', ''), 'step', error ->> 'step', 'retry', 0)
           WHEN 'completed' THEN jsonb_build_object(
               'status', status, 'round', current_round, 'reason', 'max rounds reached')
           ELSE jsonb_build_object('status', status, 'round', current_round)
       END
  FROM ended;
