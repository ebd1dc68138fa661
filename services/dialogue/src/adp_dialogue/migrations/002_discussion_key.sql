-- dialogue: the API key that created a discussion (its LLM calls are charged to that key)
ALTER TABLE discussions ADD COLUMN IF NOT EXISTS key_id text;
