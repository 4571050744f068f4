"""Examples in the OpenAPI document: real requests and the answers they got, recorded from
the API's test fixture into ``openapi_examples.json``. A test records them again on every run
and holds both the stored and the fresh ones to the document's own schemas, so an example
can't drift from what the API does."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

EXAMPLES_FILE = "openapi_examples.json"


def load() -> dict[str, Any]:
    """``{"METHOD /path": {"request": ..., "status": 200, "media_type": ..., "response": ...}}``"""
    path = resources.files(__package__).joinpath(EXAMPLES_FILE)
    if not path.is_file():  # before the first recording
        return {}
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def merge(openapi: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    """Put each example in its operation: the request body's and the answer's ``example``.
    An example written by hand in a model (``json_schema_extra``) stays as it is."""
    for key, example in examples.items():
        method, _, path = key.partition(" ")
        operation = openapi["paths"].get(path, {}).get(method.lower())
        if operation is None:
            continue  # a route gone since the recording: the test says so
        body = operation.get("requestBody", {}).get("content", {}).get("application/json")
        if body is not None and example.get("request") is not None:
            body.setdefault("example", example["request"])
        answer = operation["responses"].get(str(example["status"]))
        if answer is not None and "response" in example:
            media = answer.setdefault("content", {}).setdefault(example["media_type"], {})
            media["example"] = example["response"]
    return openapi
