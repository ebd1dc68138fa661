-- Smaller rollups so 30-day breakdowns stay fast however many users there are:
-- cost_daily_model (day, provider, model) serves global by_provider/by_model/daily and the global budget;
-- cost_daily_by_user (day, user) serves by_user and per-user budgets. Maintained in the same statement as the ledger
-- insert (see store.py); backfilled here from cost_daily.

CREATE TABLE cost_daily_model (
    day            date NOT NULL,
    provider       text NOT NULL,
    model          text NOT NULL,
    cost_nusd      bigint NOT NULL DEFAULT 0,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    requests       bigint NOT NULL DEFAULT 0,
    errors         bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, provider, model)
);

CREATE TABLE cost_daily_by_user (
    day            date NOT NULL,
    user_key       text NOT NULL,
    cost_nusd      bigint NOT NULL DEFAULT 0,
    input_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens  bigint NOT NULL DEFAULT 0,
    requests       bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (day, user_key)
);
CREATE INDEX cost_daily_user_user ON cost_daily_by_user (user_key, day);

INSERT INTO cost_daily_model
SELECT day, provider, model, sum(cost_nusd), sum(input_tokens), sum(output_tokens), sum(requests), sum(errors)
FROM cost_daily GROUP BY day, provider, model;

INSERT INTO cost_daily_by_user
SELECT day, user_key, sum(cost_nusd), sum(input_tokens), sum(output_tokens), sum(requests)
FROM cost_daily GROUP BY day, user_key;
