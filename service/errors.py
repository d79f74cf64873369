"""The one error type, and the one JSON shape every error answer has."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.responses import Response


class ServiceError(Exception):
    """An answer other than success: an HTTP status, a code, and a sentence for a person."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message


def json_response(body: Any, status: int = 200) -> Response:
    """A JSON response rendered by orjson (faster than the standard library's encoder)."""
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def error_response(status: int, code: str, message: str) -> Response:
    return json_response({"error": code, "message": message}, status)
