-- gateway: users can be disabled (their keys stop working); keys get a name, an optional expiry and an
-- optional daily budget
ALTER TABLE users ADD COLUMN IF NOT EXISTS disabled_at timestamptz;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS name text NOT NULL DEFAULT '';
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS expires_at timestamptz;
ALTER TABLE api_keys ADD COLUMN IF NOT EXISTS daily_budget_usd numeric(20, 9) CHECK (daily_budget_usd >= 0);
