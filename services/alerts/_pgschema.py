"""The alerting service's tables in the audit database (created idempotently at start).

``notifications_sent`` gained its lease and retry columns after its first release, hence the
``ADD COLUMN IF NOT EXISTS`` statements: an older database is upgraded in place. A row is
written as a notification intent (``claimed_by`` NULL, ``alert`` set, ``claimed_at`` = since when
it is owed) in the transaction of its alert change, then claimed; rows of the first release
(``alert`` NULL) are never taken as intents.
"""

from __future__ import annotations

__all__ = ["SCHEMA"]

SCHEMA = """
SELECT pg_advisory_xact_lock(hashtext('ionveil.alerts.schema:' || current_schema()));
CREATE TABLE IF NOT EXISTS alerts (
    alert_id         text PRIMARY KEY,
    org_id           text NOT NULL,
    rule_id          text NOT NULL,
    subject_key      text NOT NULL,
    incident_id      text,
    status           text NOT NULL,
    severity         text NOT NULL,
    escalation_level integer NOT NULL,
    seq              integer NOT NULL,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    resolved_at      timestamptz,
    data             jsonb NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_one_open
    ON alerts (org_id, rule_id, subject_key) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_active_org ON alerts (org_id) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_active_incident
    ON alerts (org_id, incident_id) WHERE status <> 'resolved';
CREATE INDEX IF NOT EXISTS alerts_resolved_key
    ON alerts (org_id, rule_id, subject_key, resolved_at) WHERE status = 'resolved';
CREATE TABLE IF NOT EXISTS alert_outbox (
    alert_id   text NOT NULL,
    seq        integer NOT NULL,
    payload    jsonb NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (alert_id, seq)
);
CREATE INDEX IF NOT EXISTS alert_outbox_created ON alert_outbox (created_at);
CREATE TABLE IF NOT EXISTS alert_policy_seq (
    org_id   text PRIMARY KEY,
    sequence bigint NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_outcomes (
    org_id      text NOT NULL,
    incident_id text NOT NULL,
    kind        text NOT NULL,
    region      text,
    at          double precision NOT NULL,
    met         boolean NOT NULL,
    PRIMARY KEY (org_id, incident_id, kind)
);
CREATE INDEX IF NOT EXISTS alert_outcomes_arrivals ON alert_outcomes (at) WHERE kind = 'arrival';
CREATE TABLE IF NOT EXISTS alert_streaks (
    org_id text NOT NULL,
    region text NOT NULL,
    streak integer NOT NULL,
    PRIMARY KEY (org_id, region)
);
CREATE TABLE IF NOT EXISTS alert_rules (
    rule_id    text PRIMARY KEY,
    org_id     text,
    data       jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS escalation_policies (
    org_id     text PRIMARY KEY,
    data       jsonb NOT NULL,
    updated_at timestamptz NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_suppressions (
    suppression_id text PRIMARY KEY,
    org_id         text NOT NULL,
    expires_at     timestamptz NOT NULL,
    data           jsonb NOT NULL
);
CREATE TABLE IF NOT EXISTS alert_incidents (
    org_id      text NOT NULL,
    incident_id text NOT NULL,
    priority    integer NOT NULL,
    dispatch_ts double precision NOT NULL,
    region      text,
    PRIMARY KEY (org_id, incident_id)
);
CREATE TABLE IF NOT EXISTS notifications_sent (
    alert_id   text NOT NULL,
    seq        integer NOT NULL,
    channel    text NOT NULL,
    claimed_at timestamptz NOT NULL DEFAULT now(),
    ok         boolean,
    attempts   integer,
    error      text,
    PRIMARY KEY (alert_id, seq, channel)
);
ALTER TABLE notifications_sent ADD COLUMN IF NOT EXISTS kind text;
ALTER TABLE notifications_sent ADD COLUMN IF NOT EXISTS alert jsonb;
ALTER TABLE notifications_sent ADD COLUMN IF NOT EXISTS claimed_by text;
ALTER TABLE notifications_sent ADD COLUMN IF NOT EXISTS claim_token text;
ALTER TABLE notifications_sent ADD COLUMN IF NOT EXISTS rounds integer NOT NULL DEFAULT 0;
ALTER TABLE notifications_sent ADD COLUMN IF NOT EXISTS retry_at timestamptz;
CREATE INDEX IF NOT EXISTS notifications_sent_pending
    ON notifications_sent (claimed_at) WHERE ok IS NULL OR retry_at IS NOT NULL;
"""
