"""Request bodies of the HTTP endpoints (pydantic models; they make the OpenAPI schema).

The Cohere shape (``/v1/rerank``, ``/v2/rerank``, also what Jina clients send), the TEI shape
(``/rerank``) and erank's own ``/score``. Fields that real clients send but erank has no use for
(``max_chunks_per_doc``, ``priority``, ``relevant_spans``...) are accepted and ignored.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

__all__ = ["DocumentObject", "CohereRerankRequest", "TEIRerankRequest", "ScoreRequest"]


class DocumentObject(BaseModel):
    """A document given as an object: ``text`` (Cohere, Jina) or ``content`` (erank), other keys kept."""

    model_config = ConfigDict(extra="allow")

    text: str | None = Field(None, description="the document text (Cohere/Jina)")
    content: str | None = Field(None, description="the document text (erank's own dicts)")


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")

    query: str = Field(..., description="the search query", examples=["what is rust"])
    instruction: str | None = Field(
        None,
        description="erank extension: the task instruction, a name from instructions.yaml (beir, msmarco...) "
        "or free text; default: the server's",
    )


class CohereRerankRequest(_Common):
    """Cohere ``/v1/rerank`` and ``/v2/rerank`` (and Jina ``/v1/rerank``)."""

    model: str | None = Field(None, description="accepted for compatibility; the server runs one model")
    documents: list[str | DocumentObject] = Field(
        ...,
        description="strings, or objects with a 'text' field",
        examples=[["Rust is a language.", "Bread."]],
    )
    top_n: int | None = Field(None, ge=1, description="return only the best top_n (default: all)")
    return_documents: bool = Field(False, description="include each document in its result")
    rank_fields: list[str] | None = Field(
        None, description="(v1) for object documents: the keys whose values are ranked, in order"
    )
    max_tokens_per_doc: int | None = Field(
        None, ge=1, description="cut documents to this many tokens (at most the server's limit)"
    )
    max_chunks_per_doc: int | None = Field(None, description="accepted and ignored")


class TEIRerankRequest(_Common):
    """text-embeddings-inference ``/rerank``."""

    texts: list[str] = Field(..., description="the documents", examples=[["Rust is a language.", "Bread."]])
    raw_scores: bool = Field(False, description="true: ERank's rank_score (0..10); false: scaled to 0..1")
    return_text: bool = Field(False, description="include each text in its result")
    truncate: bool | None = Field(
        None, description="accepted; documents are always cut to the server's limit"
    )
    truncation_direction: str | None = Field(None, description="accepted; only 'Right' is done")


class ScoreRequest(_Common):
    """erank ``/score``: every number erank has per document."""

    documents: list[str | DocumentObject] = Field(
        ...,
        description="strings, or objects with 'text' or 'content'",
        examples=[["Rust is a language.", "Bread."]],
    )
    top_n: int | None = Field(None, ge=1, description="return only the best top_n (default: all)")
    max_tokens_per_doc: int | None = Field(None, ge=1, description="cut documents to this many tokens")
    return_documents: bool = Field(True, description="include each document in its result")
    return_reasoning: bool = Field(False, description="reasoning mode: include the model's reasoning text")
