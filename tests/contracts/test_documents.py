"""The committed AsyncAPI and OpenAPI documents are what the code generates (`make docs`)."""

from __future__ import annotations

import json
from pathlib import Path

from services.reporting.openapi import render as render_openapi
from shared.asyncapi import asyncapi_document
from shared.asyncapi import render as render_asyncapi
from shared.topics import TOPIC_SPECS

DOCS = Path(__file__).parents[2] / "docs"


def test_asyncapi_document_is_current() -> None:
    assert (DOCS / "asyncapi.json").read_text() == render_asyncapi(), "run `make docs`"


def test_openapi_document_is_current() -> None:
    assert (DOCS / "openapi.json").read_text() == render_openapi(), "run `make docs`"


def test_asyncapi_describes_every_registered_topic() -> None:
    addresses = {c["address"] for c in asyncapi_document()["channels"].values()}
    assert addresses == {spec.topic.value for spec in TOPIC_SPECS}


def test_asyncapi_references_resolve() -> None:
    document = asyncapi_document()
    text = json.dumps(document)
    for ref in {part.split('"')[0] for part in text.split('"$ref": "#/')[1:]}:
        node = document
        for step in ref.split("/"):
            node = node[step]
        assert node, ref
