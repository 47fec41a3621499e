"""Request and response bodies of the HTTP endpoints (pydantic models; they make the OpenAPI schema).

The Cohere shape (``/v1/rerank``, ``/v2/rerank``, also what Jina clients send), the TEI shape
(``/rerank``) and erank's own ``/score``. Types are strict, as Cohere's are: ``"3"`` is not an
integer and ``0`` is not a boolean. Fields that real clients send but erank has no use for
(``max_chunks_per_doc``, ``priority``...) are accepted and ignored.

The schema states the rules the server enforces: text fields hold a non-whitespace character
(``pattern: \\S``), lists hold at least one item and at most ``--max-documents``
(:func:`erank.serving.app.create_app` writes the server's limits into the schema). The answers
for text that breaks them come from the service, with messages that name the field.

Response models document the answers (they are not used to serialise them).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

__all__ = [
    "NON_BLANK",
    "CohereDocument",
    "ScoreDocument",
    "CohereRerankRequest",
    "TEIRerankRequest",
    "ScoreRequest",
    "ErrorBody",
    "CohereRerankResponse",
    "TEIRerankItem",
    "ScoreResponse",
    "HealthResponse",
    "ReadyResponse",
    "ModelsResponse",
]

#: The JSON-schema pattern of a text that is not empty or whitespace only.
NON_BLANK = r"\S"
_TEXT_SCHEMA: dict[str, Any] = {"type": "string", "minLength": 1, "pattern": NON_BLANK}

#: A string with a non-whitespace character (the service checks it and names the field).
Text = Annotated[str, WithJsonSchema(_TEXT_SCHEMA)]


def _integer(value: Any) -> Any:
    # JSON Schema's integer: 3 and 3.0, never true, "3" or 3.5.
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


#: A positive integer as JSON Schema means it (``3.0`` is one); booleans and strings are not.
PositiveInt = Annotated[
    int, BeforeValidator(_integer), Field(ge=1), WithJsonSchema({"type": "integer", "minimum": 1})
]


class CohereDocument(BaseModel):
    """A Cohere document object: ``text``, and other string fields (which ``rank_fields`` may name)."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={"required": ["text"], "additionalProperties": _TEXT_SCHEMA},
    )
    __pydantic_extra__: dict[str, str] = Field(init=False)  # type: ignore[assignment]

    text: Annotated[str | None, WithJsonSchema(_TEXT_SCHEMA)] = Field(
        None, description="the document text (what is ranked unless rank_fields names other keys)"
    )


class ScoreDocument(BaseModel):
    """An erank document object: ``text`` or ``content``; other keys are kept and returned."""

    model_config = ConfigDict(
        extra="allow",
        strict=True,
        json_schema_extra={"anyOf": [{"required": ["text"]}, {"required": ["content"]}]},
    )

    text: Annotated[str | None, WithJsonSchema(_TEXT_SCHEMA)] = Field(None, description="the document text")
    content: Annotated[str | None, WithJsonSchema(_TEXT_SCHEMA)] = Field(
        None, description="the document text (erank's own dicts); used when there is no 'text'"
    )


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)

    query: Text = Field(..., description="the search query", examples=["what is rust"])
    instruction: Text | None = Field(
        None,
        description="erank extension: the task instruction, a name from instructions.yaml (beir, msmarco...) "
        "or free text; default: the server's. Cut to the server's --max-instruction-tokens, and the answer "
        "says so.",
    )


class CohereRerankRequest(_Common):
    """Cohere ``/v1/rerank`` and ``/v2/rerank`` (and Jina ``/v1/rerank``)."""

    model: str | None = Field(
        None,
        description="the served model's name (GET /v1/models), 'erank' or 'default'; other names get a 404 "
        "unless the server allows any",
    )
    documents: list[Text | CohereDocument] = Field(
        ...,
        description="strings, or objects with a 'text' field",
        examples=[["Rust is a language.", "Bread."]],
    )
    top_n: PositiveInt | None = Field(None, description="return only the best top_n (default: all)")
    return_documents: bool = Field(False, description="include each document in its result")
    rank_fields: list[str] | None = Field(
        None,
        description="(v1) for object documents: the keys whose values are ranked, in order, as 'key: value' "
        "lines; keys a document lacks or leaves blank are skipped; a document with none of them is "
        "ranked by its 'text'",
    )
    max_tokens_per_doc: PositiveInt | None = Field(
        None, description="cut documents to this many tokens (at most the server's limit)"
    )
    max_chunks_per_doc: PositiveInt | None = Field(None, description="accepted and ignored")


class TEIRerankRequest(_Common):
    """text-embeddings-inference ``/rerank``."""

    texts: list[Text] = Field(..., description="the documents", examples=[["Rust is a language.", "Bread."]])
    raw_scores: bool = Field(False, description="true: ERank's rank_score (0..10); false: scaled to 0..1")
    return_text: bool = Field(False, description="include each text in its result")
    truncate: bool | None = Field(
        None, description="accepted; documents are always cut to the server's limit"
    )
    truncation_direction: Literal["Right"] | None = Field(
        None, description="accepted; only 'Right' (keep the start) is done"
    )


class ScoreRequest(_Common):
    """erank ``/score``: every number erank has per document."""

    documents: list[Text | ScoreDocument] = Field(
        ...,
        description="strings, or objects with 'text' or 'content'",
        examples=[["Rust is a language.", "Bread."]],
    )
    top_n: PositiveInt | None = Field(None, description="return only the best top_n (default: all)")
    max_tokens_per_doc: PositiveInt | None = Field(None, description="cut documents to this many tokens")
    return_documents: bool = Field(True, description="include each document in its result")
    return_reasoning: bool = Field(False, description="reasoning mode: include the model's reasoning text")


# ------------------------------------------------------------------------------------ responses
class ErrorBody(BaseModel):
    """Every error: ``message`` (Cohere clients), ``error`` and ``error_type`` (TEI clients)."""

    message: str
    error: str
    error_type: str = Field(..., description="a stable kind: invalid_input, queue_full, unauthorized...")
    field: str | None = Field(None, description="the field at fault, where there is one")


class _ApiVersion(BaseModel):
    version: str


class _BilledUnits(BaseModel):
    search_units: int
    input_tokens: int


class _Tokens(BaseModel):
    input_tokens: int
    output_tokens: int


class _CohereMeta(BaseModel):
    api_version: _ApiVersion
    billed_units: _BilledUnits
    tokens: _Tokens
    warnings: list[str] | None = None


class _CohereResult(BaseModel):
    index: int
    relevance_score: float
    document: dict[str, Any] | None = Field(None, description="with return_documents")


class _CohereUsage(BaseModel):
    total_tokens: int
    prompt_tokens: int


class CohereRerankResponse(BaseModel):
    id: str
    results: list[_CohereResult]
    meta: _CohereMeta
    model: str
    usage: _CohereUsage


class TEIRerankItem(BaseModel):
    index: int
    score: float
    text: str | None = Field(None, description="with return_text")


class _ScoreResult(BaseModel):
    index: int
    rank: int
    score: float
    relevance_score: float
    label: int | None
    probability: float | None
    distribution: list[float] | None
    expected_score: float | None
    parsed: bool
    truncated: bool
    prompt_tokens: int
    generated_tokens: int
    reasoning: str | None = None
    output: str | None = None
    document: dict[str, Any] | None = None


class _ScoreUsage(BaseModel):
    documents: int
    prompt_tokens: int
    generated_tokens: int
    unparsed: int
    truncated_documents: int
    seconds: float


class ScoreResponse(BaseModel):
    id: str
    model: str
    method: str
    mode: str
    ranking: list[int]
    results: list[_ScoreResult]
    usage: _ScoreUsage
    warnings: list[str]


class HealthResponse(BaseModel):
    status: Literal["ok"]


class ReadyResponse(BaseModel):
    status: Literal["ready", "loading", "failed", "draining"]
    model: str | None = None
    error: str | None = None


class _ModelCard(BaseModel):
    id: str
    object: str
    created: int
    owned_by: str


class _CohereModel(BaseModel):
    name: str
    endpoints: list[str]


class ModelsResponse(BaseModel):
    object: str
    data: list[_ModelCard]
    models: list[_CohereModel]
