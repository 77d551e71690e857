"""Errors in OpenAI's JSON shape: ``{"error": {"message", "type", "param", "code"}}``.

Every failure the server reports — bad input, a wrong key, an unknown model, a full queue, an
internal fault — leaves as an :class:`ApiError` rendered by :func:`error_response`; a traceback
never reaches the client (internal faults are logged on the server side).
"""

from __future__ import annotations

from starlette.responses import JSONResponse


class ApiError(Exception):
    """An HTTP error with OpenAI's error fields. ``headers`` are added to the response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type = status, message, type
        self.code, self.param = code, param
        self.headers = dict(headers or {})

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def error_response(err: ApiError) -> JSONResponse:
    return JSONResponse(err.body(), status_code=err.status, headers=err.headers)


def bad_request(message: str, *, code: str = "invalid_value", param: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, message, code=code, param=param)


def model_not_found(model: str, known: list[str]) -> ApiError:
    """404 as OpenAI answers an unknown model id."""
    return ApiError(
        404,
        f"The model `{model}` does not exist; available: {', '.join(known)}",
        code="model_not_found",
        param="model",
    )


def internal_error() -> ApiError:
    return ApiError(
        500,
        "internal server error (see the server log)",
        type="server_error",
        code="internal_error",
    )
