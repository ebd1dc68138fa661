-- alerts service schema: alerts (one row per firing episode), the notification outbox, delivery attempts.

CREATE TABLE IF NOT EXISTS alerts (
    id               text PRIMARY KEY,
    rule             text NOT NULL,
    subject          text NOT NULL,
    severity         text NOT NULL CHECK (severity IN ('info', 'warning', 'critical')),
    state            text NOT NULL CHECK (state IN ('firing', 'resolved')),
    message          text NOT NULL,
    value            double precision,
    threshold        double precision,
    labels           jsonb NOT NULL DEFAULT '{}'::jsonb,
    started_at       timestamptz NOT NULL,
    resolved_at      timestamptz,
    last_notified_at timestamptz NOT NULL,
    reminders        integer NOT NULL DEFAULT 0,
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    fired_by         text NOT NULL DEFAULT '',
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- Second guard against double-firing (the first is the leader lease): at most one firing alert per
-- (rule, subject); an insert by a stale leader conflicts and does nothing.
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_firing ON alerts (rule, subject) WHERE state = 'firing';
CREATE INDEX IF NOT EXISTS alerts_started ON alerts (started_at DESC);
CREATE INDEX IF NOT EXISTS alerts_rule_started ON alerts (rule, started_at DESC);

-- Outbox: one row per (alert event, channel, target), written in the same transaction as the alert
-- change, delivered (and re-tried) by the dispatchers of every copy.
CREATE TABLE IF NOT EXISTS notifications (
    id              bigserial PRIMARY KEY,
    dedup_key       text NOT NULL UNIQUE,
    alert_id        text NOT NULL REFERENCES alerts (id),
    event           text NOT NULL CHECK (event IN ('firing', 'resolved', 'reminder', 'acknowledged')),
    channel         text NOT NULL,
    target          text NOT NULL DEFAULT '',
    body            text NOT NULL,
    status          text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed')),
    rounds          integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz NOT NULL DEFAULT now(),
    last_error      text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    delivered_at    timestamptz
);
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS notifications_alert ON notifications (alert_id);

-- Every delivery attempt (each HTTP try, including tenacity's retries).
CREATE TABLE IF NOT EXISTS deliveries (
    id              bigserial PRIMARY KEY,
    notification_id bigint NOT NULL REFERENCES notifications (id),
    attempt         integer NOT NULL,
    at              timestamptz NOT NULL DEFAULT now(),
    ok              boolean NOT NULL,
    status_code     integer,
    error           text,
    duration_ms     double precision NOT NULL DEFAULT 0,
    instance        text NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS deliveries_notification ON deliveries (notification_id);
