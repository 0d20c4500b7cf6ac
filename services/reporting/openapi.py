"""The reporting API's OpenAPI document (``python -m services.reporting.openapi``); CI compares
it with docs/openapi.json."""

from __future__ import annotations

import json

from services.reporting.api import create_api
from services.reporting.repository import ReadModelQueries
from services.reporting.settings import ReportingSettings


def _no_database() -> ReadModelQueries:
    raise RuntimeError("the document is generated without a database")


def render() -> str:
    # The document does not depend on the token; any value builds the app.
    app = create_api(ReportingSettings(api_token="unused"), _no_database)  # noqa: S106
    return json.dumps(app.openapi(), indent=2, sort_keys=True) + "\n"


if __name__ == "__main__":
    print(render(), end="")
