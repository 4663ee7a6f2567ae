# Checks of the Python API's inputs (answer / compress / rerank) and of tokenizer-vs-embedding sizes, with the fix.
from __future__ import annotations

from typing import Any, Sequence

from scaledown.errors import ConfigError, DataError

class ApiInputError(DataError, TypeError):
    """A wrong kind of argument (a string where a list belongs): a DataError with the fix, and a TypeError."""


API_HELP = ('pass one list of documents per query: model.answer(["question"], [["document 1", "document 2"]])')


def check_api_inputs(queries: Sequence[str], documents: Sequence[Sequence[str]],
                     allow_no_documents: bool = False) -> list[dict[str, Any]]:
    """Rows {"query", "documents"} from the API's two lists; DataError naming the query and the fix.

    A string where a list of documents belongs is refused (list("a document") would be one-character
    documents); so is an empty document list, unless `allow_no_documents` (documents_as="none")."""
    if isinstance(queries, str):
        raise ApiInputError(f"queries must be a list of strings (one per question), not a single string; {API_HELP}.")
    if isinstance(documents, str):
        raise ApiInputError(f"documents must be a list with one list of documents per query, not a single string; "
                        f"{API_HELP}.")
    queries, documents = list(queries), list(documents)
    if len(queries) != len(documents):
        raise DataError(f"got {len(queries)} queries but {len(documents)} document lists; {API_HELP}.")
    rows = []
    for i, (query, docs) in enumerate(zip(queries, documents)):
        if not isinstance(query, str):
            raise DataError(f"queries[{i}] must be a string, got {type(query).__name__}.")
        if isinstance(docs, str):
            raise ApiInputError(f"documents[{i}] is one string, not a list of documents: it would be read as "
                            f"{len(docs)} one-character documents. Wrap it: [[\"...\"]] ({API_HELP}).")
        if not isinstance(docs, (list, tuple)):
            raise DataError(f"documents[{i}] must be a list of document strings, got {type(docs).__name__}.")
        if not docs and not allow_no_documents:
            raise DataError(f"documents[{i}] is an empty list: query {i} has nothing to compress. Give at least one "
                            f"document, or answer without documents with documents_as='none'.")
        for j, doc in enumerate(docs):
            if not isinstance(doc, str):
                raise DataError(f"documents[{i}][{j}] must be a string, got {type(doc).__name__}.")
        rows.append({"query": query, "documents": list(docs)})
    return rows


def check_generation_kwargs(kwargs: dict[str, Any]) -> None:
    """max_length counts the prompt too (memory slots, template), so it would mean something else than the
    user thinks: refuse it and name max_new_tokens (the tokens generated per answer)."""
    if "max_length" in kwargs:
        raise ConfigError(f"max_length={kwargs['max_length']!r} is not supported here: it would count the prompt "
                          f"(memory slots and template) too. Pass max_new_tokens={kwargs['max_length']!r} (tokens "
                          f"generated per answer; default: the config's max_new_tokens).")
    value = kwargs.get("max_new_tokens")
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ConfigError(f"max_new_tokens={value!r} must be a positive integer (tokens generated per answer).")


def check_vocabulary(tokenizer, embeddings, tokenizer_name: str, model_name: str) -> None:
    """Every id the tokenizer can produce must have an embedding row; else the first forward ends in an
    IndexError deep inside the model. Raise ConfigError naming both sizes first."""
    if embeddings is None or tokenizer is None:
        return
    weight = embeddings.weight
    rows = int(getattr(weight, "ds_shape", weight.shape)[0])   # ZeRO-3 keeps the full shape in ds_shape
    size = len(tokenizer)
    if rows and size > rows:
        raise ConfigError(f"the tokenizer '{tokenizer_name}' has {size} ids but the embedding of '{model_name}' has "
                          f"only {rows} rows: ids {rows}..{size - 1} would index past it. Use the model's own "
                          f"tokenizer (leave tokenizer_name unset), or resize the model's embeddings to {size} rows "
                          f"(model.resize_token_embeddings) and save it before training.")
