"""The one place errors become responses: an `AppError` (and a request that fails
validation, a number out of its column's range, and the database or Redis not answering) is
JSON under /api and for API clients, an HTML page or htmx fragment for browsers, and a
redirect to sign in for a 401 in a page."""

from __future__ import annotations

import logging

import redis.exceptions
import sqlalchemy.exc
from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from psycopg.errors import NumericValueOutOfRange
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from app.errors import AppError, Invalid, Unavailable
from app.web import openai
from app.web.render import is_htmx, render, signin_redirect

log = logging.getLogger(__name__)


def wants_html(request: Request) -> bool:
    if request.url.path.startswith("/api/"):
        return False
    return is_htmx(request) or "text/html" in request.headers.get("accept", "")


def error_response(request: Request, err: AppError) -> Response:
    if openai.is_v1(request):
        return openai.app_error_response(err)
    if not wants_html(request):
        return JSONResponse({"error": err.to_dict()}, status_code=err.status)
    if err.status == 401:  # not signed in, or the session expired: to the sign-in page
        target = signin_redirect(request)
        if is_htmx(request):
            return Response(status_code=401, headers={"HX-Redirect": target})
        return RedirectResponse(target, status_code=303)
    return render(
        request, "error.html", {"error": err}, fragment="_error.html", status_code=err.status
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(AppError)
    async def app_error(request: Request, err: AppError) -> Response:
        return error_response(request, err)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> Response:
        first = err.errors()[0] if err.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = str(first["msg"]).removeprefix("Value error, ")
        if openai.is_v1(request):  # a body that is not a JSON object is a 400, as OpenAI's
            if first.get("type") == "json_invalid" or not where:
                return openai.error_response(400, message, "invalid_request")
            return openai.error_response(422, message, "invalid_request", where or None)
        return error_response(request, Invalid(f"{where}: {message}" if where else message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        """No such route or method, or a body that cannot be parsed (JSON nested too deep):
        OpenAI's shape under /v1, the app's own under /api, FastAPI's for pages."""
        code = HTTP_CODES.get(err.status_code, "bad_request")
        if openai.is_v1(request):
            return openai.error_response(err.status_code, str(err.detail), code)
        if request.url.path.startswith("/api/"):
            error = AppError(str(err.detail), code=code, status=err.status_code)
            return error_response(request, error)
        return await http_exception_handler(request, err)

    @app.exception_handler(DataError)
    async def out_of_range(request: Request, err: DataError) -> Response:
        """A number past its column's range (an id or offset typed by hand) is bad input, in
        every route alike; any other DataError is a bug and stays a 500."""
        if not isinstance(err.orig, NumericValueOutOfRange):
            raise err
        return error_response(request, Invalid("a number in the request is out of range"))

    @app.exception_handler(sqlalchemy.exc.OperationalError)
    @app.exception_handler(sqlalchemy.exc.InterfaceError)
    @app.exception_handler(sqlalchemy.exc.TimeoutError)
    async def database_down(request: Request, err: Exception) -> Response:
        log.warning("database unavailable: %s", str(err).splitlines()[0][:200])
        return error_response(request, DATABASE_DOWN)

    @app.exception_handler(redis.exceptions.ConnectionError)
    @app.exception_handler(redis.exceptions.TimeoutError)
    async def redis_down(request: Request, err: Exception) -> Response:
        log.warning("redis unavailable: %s", err)
        return error_response(request, REDIS_DOWN)


HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}
DATABASE_DOWN = Unavailable("the database is not answering: try again in a moment")
REDIS_DOWN = Unavailable("Redis is not answering: try again in a moment")
