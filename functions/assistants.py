"""What ``POST /assistants`` accepts, checked the way Vapi checks it, and the DTO it becomes.

Everything an operator may set is validated here against Vapi's published rules for
``POST /assistant`` (``#/components/schemas/CreateAssistantDTO`` and the provider-specific
schemas its ``model``/``voice``/``transcriber`` are ``oneOf``), so a mistake is a 400 naming the
field before anything reaches Vapi, not Vapi's 400 relayed, or a 502. What is checked: every
enum and bound of the fields this request exposes, the provider lists, which provider takes
which field (Vapi rejects a property its DTO does not declare), and the fields a provider
requires that this request cannot set. Not copied: each provider's list of model names, voices
and languages (hundreds of values that change monthly); for those Vapi's own 400 comes back as
our 400 with Vapi's message, which names the field.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal, Self

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from voicebridge import identifiers

# What the control plane handles (#/components/schemas/CreateAssistantDTO/properties/
# serverMessages/items/enum), so Vapi does not post traffic we would only drop.
# ``assistant-request`` is not sent for an existing assistant.
SERVER_MESSAGES = (
    "tool-calls",
    "transfer-destination-request",
    "status-update",
    "end-of-call-report",
    "hang",
    "transfer-update",
)
PHONE_CALL_CONTROL = "phone-call-control"  # #/components/schemas/ServerMessagePhoneCallControl

# CreateAssistantDTO.model oneOf: each *Model's ``provider`` enum.
ModelProvider = Literal[
    "anthropic",
    "anthropic-bedrock",
    "anyscale",
    "cerebras",
    "custom-llm",
    "deepinfra",
    "deep-seek",
    "google",
    "groq",
    "inflection-ai",
    "minimax",
    "openai",
    "openrouter",
    "perplexity-ai",
    "together-ai",
    "xai",
    "vapi",
]
# CreateAssistantDTO.voice oneOf: each *Voice's ``provider`` enum.
VoiceProvider = Literal[
    "azure",
    "cartesia",
    "custom-voice",
    "deepgram",
    "11labs",
    "hume",
    "lmnt",
    "neuphonic",
    "openai",
    "playht",
    "wellsaid",
    "rime-ai",
    "smallest-ai",
    "tavus",
    "vapi",
    "sesame",
    "inworld",
    "minimax",
    "xai",
    "microsoft",
]
# CreateAssistantDTO.transcriber oneOf: each *Transcriber's ``provider`` enum.
TranscriberProvider = Literal[
    "assembly-ai",
    "azure",
    "custom-transcriber",
    "deepgram",
    "11labs",
    "gladia",
    "google",
    "speechmatics",
    "talkscriber",
    "openai",
    "cartesia",
    "soniox",
    "xai",
    "vapi",
]
# Providers whose schema requires a property this request does not expose.
_NEEDS: dict[tuple[str, str], str] = {
    ("model", "custom-llm"): "url",  # CustomLLMModel.required
    ("voice", "custom-voice"): "server",  # CustomVoice.required
    ("voice", "neuphonic"): "language",  # NeuphonicVoice.required
    ("voice", "sesame"): "model",  # SesameVoice.required
    ("transcriber", "custom-transcriber"): "server",  # CustomTranscriber.required
    ("transcriber", "speechmatics"): "customVocabulary",  # SpeechmaticsTranscriber.required
}
# Transcribers without a ``model`` property: AssemblyAITranscriber, AzureSpeechTranscriber,
# VapiTranscriber (CustomTranscriber is refused above).
_TRANSCRIBERS_WITHOUT_MODEL = frozenset({"assembly-ai", "azure", "vapi"})
FirstMessageMode = Literal[  # CreateAssistantDTO.firstMessageMode
    "assistant-speaks-first",
    "assistant-speaks-first-with-model-generated-message",
    "assistant-waits-for-user",
]


def _unsupported(part: str, provider: str) -> None:
    needed = _NEEDS.get((part, provider))
    if needed:
        raise ValueError(
            f"{part}.provider {provider!r} requires {part}.{needed}, which this API does not "
            "set: create that assistant in Vapi and bind its id to the number"
        )


def _known_tools(names: list[str]) -> list[str]:
    from functions.tools import REGISTRY

    unknown = [name for name in names if name not in REGISTRY]
    if unknown:
        raise ValueError(f"unknown tools: {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return names


def _e164(value: str) -> str:
    if not identifiers.E164.fullmatch(value):
        raise ValueError(f"{value!r} is not an E.164 number like {identifiers.E164_EXAMPLE}")
    return value


class CamelModel(BaseModel):
    """An admin request body: camelCase on the wire (as Vapi's own fields), unknown keys refused."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")


class ModelOptions(CamelModel):
    provider: ModelProvider = "openai"
    model: str | None = Field(default=None, min_length=1, max_length=80)
    temperature: float = Field(default=0.5, ge=0, le=2)  # every *Model.temperature
    max_tokens: int | None = Field(default=None, ge=50, le=10_000)  # every *Model.maxTokens

    @model_validator(mode="after")
    def _vapi_rules(self) -> Self:
        _unsupported("model", self.provider)
        if self.model is None:
            if self.provider == "openai":
                self.model = "gpt-4o-mini"  # in OpenAIModel.model's enum
            elif self.provider != "vapi":  # VapiModel is the only one without a required model
                raise ValueError(f"model.model is required for provider {self.provider!r}")
        if self.provider == "vapi":
            if self.max_tokens is not None:
                raise ValueError("model.maxTokens: VapiModel has no maxTokens")
        elif self.max_tokens is None:
            self.max_tokens = 250
        return self

    def dto(self, system_prompt: str) -> dict[str, Any]:
        body: dict[str, Any] = {"provider": self.provider}
        if self.model is not None:
            body["model"] = self.model
        body["temperature"] = self.temperature
        if self.max_tokens is not None:
            body["maxTokens"] = self.max_tokens
        body["messages"] = [{"role": "system", "content": system_prompt}]
        return body


class VoiceOptions(CamelModel):
    provider: VoiceProvider = "vapi"
    voice_id: str | None = Field(default=None, min_length=1, max_length=120)

    @model_validator(mode="after")
    def _vapi_rules(self) -> Self:
        _unsupported("voice", self.provider)
        if self.voice_id is None:
            if self.provider != "vapi":  # every other voice requires voiceId
                raise ValueError(f"voice.voiceId is required for provider {self.provider!r}")
            self.voice_id = "Elliot"
        return self

    def dto(self) -> dict[str, Any]:
        return {"provider": self.provider, "voiceId": self.voice_id}


class TranscriberOptions(CamelModel):
    provider: TranscriberProvider = "deepgram"
    model: str | None = Field(default=None, min_length=1, max_length=60)
    language: str | None = Field(default=None, min_length=1, max_length=16)
    # DeepgramTranscriber.endpointing: 10-500 (ms of silence that ends a turn)
    endpointing: int | None = Field(default=None, ge=10, le=500)

    @model_validator(mode="after")
    def _vapi_rules(self) -> Self:
        _unsupported("transcriber", self.provider)
        if self.model is not None and self.provider in _TRANSCRIBERS_WITHOUT_MODEL:
            raise ValueError(f"transcriber.model: the {self.provider!r} transcriber has no model")
        if self.model is None and self.provider == "openai":  # OpenAITranscriber.required
            raise ValueError("transcriber.model is required for provider 'openai'")
        if self.endpointing is not None and self.provider != "deepgram":
            raise ValueError(
                "transcriber.endpointing (ms) is a deepgram setting; set other providers' "
                "endpointing in Vapi"
            )
        if self.provider == "deepgram":  # our phone-call defaults
            self.model = self.model or "nova-3"
            self.language = self.language or "en"
            self.endpointing = self.endpointing or 300
        return self

    def dto(self) -> dict[str, Any]:
        return {"provider": self.provider} | {
            key: value
            for key, value in (
                ("model", self.model),
                ("language", self.language),
                ("endpointing", self.endpointing),
            )
            if value is not None
        }


class CreateAssistant(CamelModel):
    """What an operator provides; everything else has a sensible phone-call default."""

    name: str = Field(min_length=1, max_length=40)  # CreateAssistantDTO.name maxLength 40
    system_prompt: str = Field(min_length=1, max_length=20_000)
    first_message: str = Field("Hello! How can I help you today?", max_length=1000)
    first_message_mode: FirstMessageMode = "assistant-speaks-first"
    model: ModelOptions = Field(default_factory=lambda: ModelOptions())
    voice: VoiceOptions = Field(default_factory=lambda: VoiceOptions())
    transcriber: TranscriberOptions = Field(default_factory=lambda: TranscriberOptions())
    tools: Annotated[list[str], AfterValidator(_known_tools)] = Field(
        default_factory=list, max_length=16
    )
    # Vapi's own endCall/transferCall tools, carried out by us (functions.phone_control).
    phone_call_control: bool = False
    max_duration_seconds: int = Field(600, ge=10, le=43_200)  # CreateAssistantDTO bounds
    phone_numbers: list[Annotated[str, AfterValidator(_e164)]] = Field(
        default_factory=list, max_length=20
    )
    metadata: dict[str, str] = Field(default_factory=dict, max_length=20)


def _phone_call_tools(transfer_allowlist: Mapping[str, str]) -> list[dict[str, Any]]:
    """Vapi's built-in tools (CreateEndCallToolDTO, CreateTransferCallToolDTO); with
    phone-call-control Vapi asks our server to carry them out."""
    tools: list[dict[str, Any]] = [{"type": "endCall"}]
    if transfer_allowlist:
        destinations = [  # TransferDestinationNumber
            {"type": "number", "number": number, "description": name}
            for name, number in transfer_allowlist.items()
        ]
        tools.append({"type": "transferCall", "destinations": destinations})
    return tools


def vapi_assistant_body(
    spec: CreateAssistant,
    server_url: str,
    secret: str,
    *,
    credential_id: str | None = None,
    secret_header: bool = True,
    transfer_allowlist: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The CreateAssistantDTO for ``spec``. The server authenticates with the ``x-vapi-secret``
    header (``secret_header``) and/or the Vapi credential ``credential_id``."""
    from functions.tools import SCHEMAS

    model = spec.model.dto(spec.system_prompt)
    tools = [SCHEMAS[name] for name in dict.fromkeys(spec.tools)]
    if spec.phone_call_control:
        tools += _phone_call_tools(transfer_allowlist or {})
    if tools:
        model["tools"] = tools
    server: dict[str, Any] = {"url": server_url, "timeoutSeconds": 20}
    if credential_id:
        server["credentialId"] = credential_id
    if secret_header:
        server["headers"] = {"x-vapi-secret": secret}
    messages = [*SERVER_MESSAGES, *([PHONE_CALL_CONTROL] if spec.phone_call_control else [])]
    return {
        "name": spec.name,
        "firstMessage": spec.first_message,
        "firstMessageMode": spec.first_message_mode,
        "model": model,
        "voice": spec.voice.dto(),
        "transcriber": spec.transcriber.dto(),
        "maxDurationSeconds": spec.max_duration_seconds,
        "server": server,
        "serverMessages": messages,
        "metadata": {**spec.metadata, "managedBy": "voicebridge"},
    }
