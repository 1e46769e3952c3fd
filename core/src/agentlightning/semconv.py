"""Span names and attribute keys written by Agent Lightning."""

from __future__ import annotations

from enum import Enum
from typing import Any, Dict

from pydantic import BaseModel

AGL_ANNOTATION = "agentlightning.annotation"
AGL_MESSAGE = "agentlightning.message"
AGL_OBJECT = "agentlightning.object"
AGL_EXCEPTION = "agentlightning.exception"
AGL_OPERATION = "agentlightning.operation"
AGL_REWARD = "agentlightning.reward"
AGL_VIRTUAL = "agentlightning.virtual"


class AttributeKey(str, Enum):
    """A str-Enum of keys: members are the strings themselves (``==``, hashing, ``+``, f-strings and
    JSON give the key), and ``.value`` gives it too, as 0.3 code expects."""

    def __str__(self) -> str:
        return str.__str__(self)

    def __format__(self, format_spec: str) -> str:
        return str.__format__(self, format_spec)

    __hash__ = str.__hash__


class LightningResourceAttributes(AttributeKey):
    ROLLOUT_ID = "agentlightning.rollout_id"
    ATTEMPT_ID = "agentlightning.attempt_id"
    SPAN_SEQUENCE_ID = "agentlightning.span_sequence_id"
    TRACER_NAME = "agentlightning.tracer.name"


def rollout_resource_attributes(rollout_id: str, attempt_id: str, sequence_id: int) -> Dict[str, Any]:
    """Resource attributes naming a span's rollout, attempt and sequence id (as 0.3's spans carried)."""
    return {
        LightningResourceAttributes.ROLLOUT_ID.value: rollout_id,
        LightningResourceAttributes.ATTEMPT_ID.value: attempt_id,
        LightningResourceAttributes.SPAN_SEQUENCE_ID.value: sequence_id,
    }


class LightningSpanAttributes(AttributeKey):
    REWARD = "agentlightning.reward"
    LINK = "agentlightning.link"
    TAG = "agentlightning.tag"
    MESSAGE_BODY = "agentlightning.message.body"
    OBJECT_TYPE = "agentlightning.object.type"
    OBJECT_LITERAL = "agentlightning.object.literal"
    OBJECT_JSON = "agentlightning.object.json"
    OPERATION_NAME = "agentlightning.operation.name"
    OPERATION_INPUT = "agentlightning.operation.input"
    OPERATION_OUTPUT = "agentlightning.operation.output"


class RewardAttributes(AttributeKey):
    NAME = "name"
    VALUE = "value"


class LinkAttributes(AttributeKey):
    KEY_MATCH = "key_match"
    VALUE_MATCH = "value_match"


class RewardPydanticModel(BaseModel):
    name: str
    value: float


class LinkPydanticModel(BaseModel):
    key_match: str
    value_match: str


# --- LLM calls -------------------------------------------------------------------------------
# One span per LLM call, written by the LLM proxy (with exact token ids) and by framework adapters
# (structure: agent, step, request/response, without token ids). The two are joined by
# ``gen_ai.response.id``. Standard keys follow the OpenTelemetry GenAI semantic conventions.


class GenAIAttributes:
    """OpenTelemetry GenAI semantic-convention keys used on LLM call spans."""

    OPERATION_NAME = "gen_ai.operation.name"  # "chat" | "text_completion"
    PROVIDER_NAME = "gen_ai.provider.name"
    REQUEST_MODEL = "gen_ai.request.model"
    REQUEST_TEMPERATURE = "gen_ai.request.temperature"
    REQUEST_TOP_P = "gen_ai.request.top_p"
    REQUEST_MAX_TOKENS = "gen_ai.request.max_tokens"
    REQUEST_SEED = "gen_ai.request.seed"
    RESPONSE_ID = "gen_ai.response.id"
    RESPONSE_MODEL = "gen_ai.response.model"
    RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
    USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
    USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
    AGENT_NAME = "gen_ai.agent.name"
    TOOL_NAME = "gen_ai.tool.name"
    TOOL_CALL_ID = "gen_ai.tool.call.id"
    TOOL_CALL_ARGUMENTS = "gen_ai.tool.call.arguments"  # JSON string
    TOOL_CALL_RESULT = "gen_ai.tool.call.result"  # the tool's output, text or JSON string
    ERROR_TYPE = "error.type"


class GenAIOperationNames:
    """Values of ``gen_ai.operation.name``."""

    CHAT = "chat"
    TEXT_COMPLETION = "text_completion"
    EXECUTE_TOOL = "execute_tool"
    INVOKE_AGENT = "invoke_agent"


class FrameworkAttributes:
    """Keys framework adapters put on the spans they create, next to the GenAI keys.

    Every adapter span carries ``FRAMEWORK`` (the instrumentor's name), which tells it apart from the
    proxy's span of the same LLM call.
    """

    FRAMEWORK = "agentlightning.framework"  # "langchain", "openai_agents", ...
    RUN_ID = "agentlightning.framework.run_id"  # the framework's own id of the run / event
    STEP_NAME = "agentlightning.step.name"  # the step or graph node the span belongs to
    STEP_INDEX = "agentlightning.step.index"  # the step's number (LangGraph superstep)


class LLMCallAttributes:
    """Agent Lightning keys on LLM call spans (JSON payloads are strings; id lists are int lists)."""

    REQUEST = "agentlightning.llm.request"  # JSON of the request body as the client sent it
    RESPONSE = "agentlightning.llm.response"  # JSON of the response body (assembled for streams)
    PROMPT_TOKEN_IDS = "agentlightning.llm.prompt_token_ids"
    RESPONSE_TOKEN_IDS = "agentlightning.llm.response_token_ids"  # first choice
    RESPONSE_LOGPROBS = "agentlightning.llm.response_logprobs"  # first choice, one float per token
    TOKEN_IDS_SOURCE = "agentlightning.llm.token_ids_source"  # "engine" | "retokenized"
    RETOKENIZATION_DRIFT = "agentlightning.llm.retokenization_drift"  # bool, only when both are known
    DRIFT_DETAIL = "agentlightning.llm.drift_detail"  # JSON: first differing positions
    STREAM = "agentlightning.llm.stream"
    LATENCY_SECONDS = "agentlightning.llm.latency_seconds"
    HTTP_STATUS = "agentlightning.llm.http_status"
    BACKEND = "agentlightning.llm.backend"


TOKEN_IDS_FROM_ENGINE = "engine"
TOKEN_IDS_RETOKENIZED = "retokenized"
