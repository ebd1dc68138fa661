-- Spend per API key: the key a call was made with (null for calls without one) and a daily rollup per key,
-- which serves kind=by_key and per-key daily budgets (scope 'key:<id>').
ALTER TABLE usage_ledger ADD COLUMN IF NOT EXISTS key_id text;

CREATE TABLE IF NOT EXISTS cost_daily_by_key (
    day            date NOT NULL,
    key_key        text NOT NULL,
    cost_nusd      bigint NOT NULL DEFAULT 0,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    requests       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, key_key)
);
CREATE INDEX IF NOT EXISTS cost_daily_key_key ON cost_daily_by_key (key_key, day);
