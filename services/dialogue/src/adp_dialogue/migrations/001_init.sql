-- dialogue: discussions and everything in them. The database is the only source of truth.

CREATE TABLE discussions (
    id            text PRIMARY KEY,
    user_id       text NOT NULL,
    topic         text NOT NULL,
    status        text NOT NULL,          -- running | waiting | resolved | completed | stopped
    personas      jsonb NOT NULL,
    current_round integer NOT NULL DEFAULT 0,
    max_rounds    integer NOT NULL DEFAULT 20,
    auto_mode     boolean NOT NULL DEFAULT false,
    token_count   integer NOT NULL DEFAULT 0,
    token_limit   integer NOT NULL DEFAULT 4000,
    resolution    jsonb,
    next_seq      bigint NOT NULL DEFAULT 1,  -- next discussion event seq
    current_job   jsonb,                      -- the step in flight (status running) or the failed one
    error         jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX discussions_user_idx ON discussions (user_id, created_at DESC);
CREATE INDEX discussions_active_idx ON discussions (status) WHERE status IN ('running', 'waiting');

CREATE TABLE messages (
    id            text PRIMARY KEY,
    discussion_id text NOT NULL REFERENCES discussions (id) ON DELETE CASCADE,
    persona       text NOT NULL,
    content       text NOT NULL,
    round         integer NOT NULL,
    turn          integer NOT NULL,
    position      integer NOT NULL,       -- 1..personas; 0 for a User message
    provider      text,
    model         text,
    input_tokens  integer NOT NULL DEFAULT 0,
    output_tokens integer NOT NULL DEFAULT 0,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (discussion_id, round, turn)
);

CREATE TABLE rounds (
    discussion_id text NOT NULL REFERENCES discussions (id) ON DELETE CASCADE,
    number        integer NOT NULL,
    token_count   integer NOT NULL DEFAULT 0,
    completed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (discussion_id, number)
);

CREATE TABLE question_sets (
    id            text PRIMARY KEY,
    discussion_id text NOT NULL REFERENCES discussions (id) ON DELETE CASCADE,
    round         integer NOT NULL,
    questions     jsonb NOT NULL,
    reason        text,
    fallback      boolean NOT NULL DEFAULT false,
    answers       jsonb,
    answered_at   timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    UNIQUE (discussion_id, round)
);

CREATE TABLE summaries (
    id             text PRIMARY KEY,
    discussion_id  text NOT NULL REFERENCES discussions (id) ON DELETE CASCADE,
    round          integer NOT NULL,
    content        text NOT NULL,
    tokens_before  integer NOT NULL,
    tokens_after   integer NOT NULL,
    reason         text,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (discussion_id, round)
);

CREATE TABLE files (
    id            text PRIMARY KEY,
    discussion_id text NOT NULL REFERENCES discussions (id) ON DELETE CASCADE,
    name          text NOT NULL,
    content_type  text NOT NULL,
    size          bigint NOT NULL,
    text          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_discussion_idx ON files (discussion_id);

-- Durable events (outbox): written in the step's transaction, published after commit, re-published
-- with the same seq when a step is redelivered.
CREATE TABLE events (
    discussion_id text NOT NULL REFERENCES discussions (id) ON DELETE CASCADE,
    seq           bigint NOT NULL,
    event         text NOT NULL,
    data          jsonb NOT NULL,
    step_key      text,
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (discussion_id, seq)
);
CREATE INDEX events_step_idx ON events (discussion_id, step_key);

-- Idempotency of steps: a step's result and its follow-up job are recorded once.
CREATE TABLE processed_steps (
    discussion_id text NOT NULL REFERENCES discussions (id) ON DELETE CASCADE,
    step_key      text NOT NULL,
    next_job      jsonb,
    processed_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (discussion_id, step_key)
);
