"""Configuration of the dialogue service (environment variables with prefix ADP_)."""

from __future__ import annotations

from pydantic import Field, model_validator

from adp_common.settings import ServiceSettings


class DialogueSettings(ServiceSettings):
    service_name: str = "dialogue"
    max_active_discussions: int = Field(default=1, ge=1, description="Unresolved discussions per user")
    default_max_rounds: int = Field(default=20, ge=1, le=100)
    token_limit: int = Field(default=4000, ge=200, description="Context tokens before an automatic summary (80%)")
    worker_concurrency: int = Field(default=8, ge=1, description="Steps run at once by one copy")
    command_pool_size: int = Field(
        default=4, ge=1, description="DB connections for gateway commands/queries, apart from the steps' pool"
    )
    step_ack_wait_s: float = Field(
        default=5.0, gt=0, description="A step whose copy died (no keep-alive for this long) goes to another copy"
    )
    step_progress_s: float = Field(
        default=2.0,
        gt=0,
        description="How often a running step keeps its message alive (well under the ack wait; each keep-alive "
        "is one message per running step, hundreds a second on a busy copy)",
    )
    step_max_deliver: int = Field(default=10, ge=1)
    llm_timeout_s: float = Field(default=120.0, gt=0, le=600, description="Deadline of one LLM call")
    turn_max_tokens: int = Field(default=600, ge=16)
    max_step_attempts: int = Field(
        default=5,
        ge=1,
        description="A step that failed this many times (each retry is the user's `proceed`) ends the discussion "
        "as failed (event discussion-failed)",
    )
    max_continuations: int = Field(default=2, ge=0, description="Continuations of a cut-off answer")
    resolution_min_round: int = Field(default=5, ge=1)
    auto_questions: bool = Field(default=True, description="Ask the user questions automatically from round 3")
    sweep_interval_s: float = Field(default=30.0, gt=0, description="How often stalled discussions are checked")
    stall_after_s: float = Field(
        default=600.0, gt=0, description="A running discussion this quiet gets its current job re-published"
    )

    @model_validator(mode="after")
    def _progress_within_ack_wait(self) -> DialogueSettings:
        if self.step_progress_s * 2 > self.step_ack_wait_s:
            raise ValueError("ADP_STEP_PROGRESS_S must be at most half of ADP_STEP_ACK_WAIT_S")
        return self
