"""Pure domain logic of the dialogue service (no I/O): turns, prompts, resolution, questions, policies."""
