"""One base exception; the HTTP layer maps it to `{"error": {"code", "message"}}`."""

from __future__ import annotations


class TidingsError(Exception):
    status = 500
    code = "internal"

    def __init__(self, message: str, *, path: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.path = path


class BadRequest(TidingsError):
    status = 400
    code = "bad_request"


class Invalid(TidingsError):
    status = 422
    code = "invalid"


class NotFound(TidingsError):
    status = 404
    code = "not_found"


class Conflict(TidingsError):
    status = 409
    code = "conflict"


class Unavailable(TidingsError):
    status = 503
    code = "unavailable"


class Unauthorized(TidingsError):
    status = 401
    code = "unauthorized"


class Forbidden(TidingsError):
    status = 403
    code = "forbidden"


class TooMany(TidingsError):
    status = 429
    code = "too_many_requests"
