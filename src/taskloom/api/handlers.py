"""taskloom errors to HTTP responses, in one place, with one body shape (`Problem`).

Validation errors never echo the rejected input: a misplaced secret would come straight back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    CorruptRecordError,
    InvalidParamsError,
    PayloadTooLargeError,
    RunNotFoundError,
    StoreUnavailableError,
    UnknownTaskError,
)
from .schemas import FieldError, Problem


def field_errors(errors: Iterable[Mapping[str, Any]]) -> list[FieldError]:
    """Location, message and type of each error; the input and context are dropped."""
    out = []
    for err in errors:
        loc = [p if isinstance(p, int) else str(p) for p in err.get("loc", ())]
        out.append(
            FieldError(loc=loc, msg=str(err.get("msg", "invalid")), type=str(err.get("type", "")))
        )
    return out


def problem(code: int, detail: str, errors: list[FieldError] | None = None) -> JSONResponse:
    """An error response."""
    body = Problem(detail=detail, errors=errors or [])
    return JSONResponse(body.model_dump(mode="json"), status_code=code)


async def _unknown_task(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, UnknownTaskError)
    return problem(status.HTTP_404_NOT_FOUND, f"unknown task {exc.name!r}")


async def _run_not_found(_: Request, exc: Exception) -> JSONResponse:
    return problem(status.HTTP_404_NOT_FOUND, str(exc))


async def _invalid_params(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, InvalidParamsError)
    errors = field_errors(exc.errors)
    for err in errors:  # relative to the request body, like FastAPI's own errors
        err.loc = ["body", "params", *err.loc]
    return problem(
        status.HTTP_422_UNPROCESSABLE_CONTENT, f"invalid params for task {exc.task!r}", errors
    )


async def _too_large(_: Request, exc: Exception) -> JSONResponse:
    return problem(status.HTTP_413_CONTENT_TOO_LARGE, str(exc))


async def _store_down(_: Request, exc: Exception) -> JSONResponse:
    return problem(status.HTTP_503_SERVICE_UNAVAILABLE, f"store unavailable: {exc}")


async def _corrupt_record(_: Request, exc: Exception) -> JSONResponse:
    # the server's data is damaged, not the request: a 500 that says which run
    return problem(status.HTTP_500_INTERNAL_SERVER_ERROR, str(exc))


async def _http_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    response = problem(exc.status_code, str(exc.detail))
    response.headers.update(exc.headers or {})
    return response


async def _bad_request(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    return problem(
        status.HTTP_422_UNPROCESSABLE_CONTENT, "invalid request", field_errors(exc.errors())
    )


def install(app: FastAPI) -> None:
    """Register the handlers on `app`."""
    app.add_exception_handler(UnknownTaskError, _unknown_task)
    app.add_exception_handler(RunNotFoundError, _run_not_found)
    app.add_exception_handler(InvalidParamsError, _invalid_params)
    app.add_exception_handler(PayloadTooLargeError, _too_large)
    app.add_exception_handler(StoreUnavailableError, _store_down)
    app.add_exception_handler(CorruptRecordError, _corrupt_record)
    app.add_exception_handler(RequestValidationError, _bad_request)
    app.add_exception_handler(StarletteHTTPException, _http_error)
