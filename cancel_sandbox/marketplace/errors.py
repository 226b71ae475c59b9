"""API errors in Connect's shape: ``{"error_code": "...", "errors": ["..."]}``, usually HTTP 400.

Codes used (Connect publishes no catalogue; these are the ones seen in public tests):
``AUTH_001`` unauthorized (401), ``VAL_001`` validation (400, message prefixed ``field: ``),
``REQ_001`` unknown object (404), ``REQ_003`` action not allowed in the current status (400),
``REQ_005`` required fields missing (400, ``Missed fields: reason.``); a body over the size
limit is a 413 with ``VAL_001``. The mock's own choices where no code is known: ``REQ_001`` for an
unknown route (404) and ``REQ_002`` for a method a route does not allow (405).
"""

from __future__ import annotations

__all__ = ["ApiError", "invalid", "missed", "not_found", "refused"]


class ApiError(Exception):
    def __init__(self, status: int, code: str, *messages: str) -> None:
        super().__init__(f"{code}: {'; '.join(messages)}")
        self.status = status
        self.code = code
        self.messages = list(messages)

    def body(self) -> dict[str, object]:
        return {"error_code": self.code, "errors": self.messages}


def invalid(field: str, message: str) -> ApiError:
    return ApiError(400, "VAL_001", f"{field}: {message}")


def missed(*fields: str) -> ApiError:
    return ApiError(400, "REQ_005", f"Missed fields: {', '.join(fields)}.")


def not_found(kind: str, object_id: str) -> ApiError:
    return ApiError(404, "REQ_001", f"{kind} {object_id} not found.")


def refused(message: str) -> ApiError:
    return ApiError(400, "REQ_003", message)
