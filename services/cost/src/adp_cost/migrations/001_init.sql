-- cost service schema: usage ledger (one row per LLM call, exactly once), daily rollups maintained in the
-- same statement as the ledger insert, budgets, and the once-a-day budget events (with an outbox flag).
-- Money is integer nano-USD (1 USD = 1e9).

CREATE TABLE usage_ledger (
    request_id     text PRIMARY KEY,
    occurred_at    timestamptz NOT NULL,
    day            date NOT NULL,               -- UTC day of occurred_at
    provider       text NOT NULL,
    model          text NOT NULL,
    user_id        text,
    discussion_id  text,
    persona        text,
    route          text,
    input_tokens   integer NOT NULL,
    output_tokens  integer NOT NULL,
    estimated      boolean NOT NULL DEFAULT false,
    status         text NOT NULL,
    error_code     text,
    latency_ms     double precision,
    input_price    numeric(14, 6) NOT NULL,     -- USD per 1M tokens applied at the moment of use
    output_price   numeric(14, 6) NOT NULL,
    price_source   text NOT NULL,               -- model | provider_default | unknown_provider
    cost_nusd      bigint NOT NULL,
    stream_seq     bigint,
    recorded_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX usage_ledger_day ON usage_ledger (day);

-- Rollup by day, provider, model and user ('' = no user). Serves by_provider/by_model/by_user/daily/budget.
CREATE TABLE cost_daily (
    day            date NOT NULL,
    provider       text NOT NULL,
    model          text NOT NULL,
    user_key       text NOT NULL,
    cost_nusd      bigint NOT NULL DEFAULT 0,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    requests       bigint NOT NULL DEFAULT 0,
    errors         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, provider, model, user_key)
);
CREATE INDEX cost_daily_user ON cost_daily (user_key, day);

-- Rollup by day and discussion (and its user). Serves by_discussion.
CREATE TABLE cost_daily_discussion (
    day            date NOT NULL,
    discussion_key text NOT NULL,
    user_key       text NOT NULL,
    cost_nusd      bigint NOT NULL DEFAULT 0,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    requests       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, discussion_key, user_key)
);

-- Budgets set at run time ('global' or 'user:<id>'); absent rows fall back to the configured defaults.
CREATE TABLE budgets (
    scope          text PRIMARY KEY,
    limit_nusd     bigint NOT NULL CHECK (limit_nusd >= 0),
    threshold      double precision NOT NULL CHECK (threshold > 0 AND threshold <= 1),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- One row per budget, UTC day and kind: the unique key makes each event once across copies and restarts.
CREATE TABLE budget_events (
    scope          text NOT NULL,
    day            date NOT NULL,
    kind           text NOT NULL,
    spent_nusd     bigint NOT NULL,
    limit_nusd     bigint NOT NULL,
    percentage     double precision NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz,
    PRIMARY KEY (scope, day, kind)
);
CREATE INDEX budget_events_unpublished ON budget_events (created_at) WHERE published_at IS NULL;
