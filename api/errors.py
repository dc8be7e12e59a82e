"""One exception type for every client-visible failure, so the server maps it to a status in one place."""

from __future__ import annotations


class ApiError(Exception):
    """An answer other than 200: ``status`` (4xx, or 503 when the store is unreachable), a stable
    machine-readable ``code`` and a message that says what to change."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def bad_request(message: str) -> ApiError:
    return ApiError(400, "bad_request", message)


def not_found(message: str) -> ApiError:
    return ApiError(404, "not_found", message)
