-- gateway: users, hashed API keys, uploaded files (metadata + extracted text)
CREATE TABLE IF NOT EXISTS users (
    id          text PRIMARY KEY,
    name        text NOT NULL,
    role        text NOT NULL CHECK (role IN ('user', 'admin')),
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS api_keys (
    id            text PRIMARY KEY,
    user_id       text NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    key_hash      text NOT NULL UNIQUE,          -- sha256 hex of the key; the key itself is never stored
    key_prefix    text NOT NULL,                  -- first characters, to recognise a key in the admin UI
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
CREATE INDEX IF NOT EXISTS api_keys_user_idx ON api_keys (user_id);

CREATE TABLE IF NOT EXISTS files (
    id            text PRIMARY KEY,
    user_id       text NOT NULL,
    name          text NOT NULL,
    content_type  text NOT NULL,
    size          integer NOT NULL CHECK (size >= 0),
    sha256        text NOT NULL,
    text          text NOT NULL DEFAULT '',
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS files_user_idx ON files (user_id);
