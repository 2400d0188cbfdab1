"""The reading web app: one self-contained page plus a small JSON API over the study database.

Images are served only by their opaque ID, looked up in the database; no request parameter is
ever turned into a file path, so `../` anything is simply an unknown ID (404). Every input is
validated by pydantic or the store, and each failure maps to a 4xx answer. The page has its
scripts and styles inline and a Content-Security-Policy that forbids loading anything from
elsewhere, so the app works offline and cannot leak a reader's answers to a third party.

A request body is capped at `MAX_BODY_BYTES` (413 beyond it, before the app reads it), and a
validation error names the field and the problem but never echoes what was sent. A reader's
token is their secret: the browser keeps it, the page shows it as a personal link, and typing
an existing reader's name is refused (409) instead of handing that reader's token out.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import FastAPI, Path, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field

from sonosynth.reader_study.page import PAGE
from sonosynth.reader_study.store import (
    MAX_NAME_LENGTH,
    MAX_NOTE_LENGTH,
    NameTaken,
    NotFound,
    OutOfOrder,
    Reader,
    StudyStore,
)

SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; connect-src 'self'; script-src 'unsafe-inline'; "
        "style-src 'unsafe-inline'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


# The largest request body accepted; an answer with a full-length note is under 4 kB.
MAX_BODY_BYTES = 1_000_000


class BodySizeLimit:
    """ASGI middleware: refuse (413) a request whose body exceeds `limit` bytes, declared or streamed.

    The body is read here, up to the limit, and handed on whole; a larger one is never buffered.
    """

    def __init__(self, app, limit: int = MAX_BODY_BYTES) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit():
                await self._refuse(scope, receive, send, 400, "invalid Content-Length")
                return
            if int(declared) > self.limit:
                await self._refuse(scope, receive, send, 413, self._too_large())
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._refuse(scope, receive, send, 413, self._too_large())
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        pending = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]

        async def replay():
            return pending.pop() if pending else await receive()

        await self.app(scope, replay, send)

    def _too_large(self) -> str:
        return f"request body larger than {self.limit} bytes"

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str) -> None:
        response = JSONResponse({"detail": detail}, status_code=status, headers=SECURITY_HEADERS)
        await response(scope, receive, send)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReaderRequest(_Body):
    name: str = Field(min_length=1, max_length=MAX_NAME_LENGTH)


class AnswerRequest(_Body):
    answer: Literal["real", "synthetic"]
    confidence: int | None = Field(None, ge=1, le=5)
    note: str | None = Field(None, max_length=MAX_NOTE_LENGTH)
    seconds: float | None = Field(None, ge=0, le=86_400)


def _reader_json(reader: Reader) -> dict[str, object]:
    return {"reader": reader.token, "name": reader.name, "total": reader.total, "answered": reader.answered,
            "done": reader.answered >= reader.total}


TokenPath = Annotated[str, Path(max_length=64)]
ImageIdPath = Annotated[str, Path(max_length=64)]


def create_app(study_dir: str | os.PathLike, allowed_hosts: Sequence[str] | None = None) -> FastAPI:
    """The app for one study folder; refuses (SonosynthError) a folder that is not a study.

    `allowed_hosts` (e.g. 127.0.0.1, localhost) rejects requests for other Host names, which stops
    a web page elsewhere from reaching this server through DNS rebinding.
    """
    store = StudyStore(study_dir)
    app = FastAPI(title="sonosynth reader study", docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(BodySizeLimit, limit=MAX_BODY_BYTES)
    if allowed_hosts:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))

    @app.middleware("http")
    async def security_headers(request: Request, call_next):
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        # Where and what, never the input itself: echoing a body back doubles any abuse of the server.
        problems = [{"loc": list(e.get("loc", ())), "msg": e.get("msg", "invalid"), "type": e.get("type", "")}
                    for e in exc.errors()]
        return JSONResponse({"detail": problems}, status_code=422)

    @app.exception_handler(NameTaken)
    async def name_taken(request: Request, exc: NameTaken) -> JSONResponse:
        return JSONResponse({"detail": (
            "a reader of this name has already started. To continue, use the browser you started in or your "
            "personal reader link; if you are someone else, add something to the name (e.g. an initial).")},
            status_code=409)

    @app.exception_handler(NotFound)
    async def not_found(request: Request, exc: NotFound) -> JSONResponse:
        return JSONResponse({"detail": "not found"}, status_code=404)

    @app.exception_handler(OutOfOrder)
    async def out_of_order(request: Request, exc: OutOfOrder) -> JSONResponse:
        return JSONResponse({"detail": f"answer the images in order: {exc}"}, status_code=409)

    @app.exception_handler(ValueError)
    async def bad_value(request: Request, exc: ValueError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, status_code=422)

    @app.exception_handler(sqlite3.OperationalError)
    async def busy(request: Request, exc: sqlite3.OperationalError) -> JSONResponse:
        # A locked or unwritable database is a temporary state of the server, not the reader's input.
        return JSONResponse({"detail": f"the study database is unavailable ({exc}); try again"}, status_code=503)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(PAGE)

    @app.get("/api/study")
    def study() -> dict[str, object]:
        # Only what a reader may know: how many images there are, never their origins.
        return {"name": store.study_dir.name, "images": len(store.key())}

    @app.post("/api/readers")
    def register(body: ReaderRequest) -> dict[str, object]:
        return _reader_json(store.register_reader(body.name))

    @app.get("/api/readers/{token}")
    def reader(token: TokenPath) -> dict[str, object]:
        return _reader_json(store.reader(token))

    @app.get("/api/readers/{token}/items/{position}")
    def item(token: TokenPath, position: Annotated[int, Path(ge=0, le=1_000_000)]) -> dict[str, object]:
        found = store.item(token, position)
        return {"position": found.position, "image_id": found.image_id, "answer": found.answer,
                "confidence": found.confidence, "note": found.note}

    @app.put("/api/readers/{token}/answers/{image_id}")
    def answer(token: TokenPath, image_id: ImageIdPath, body: AnswerRequest) -> dict[str, object]:
        return _reader_json(store.answer(token, image_id, body.answer, body.confidence, body.note, body.seconds))

    @app.get("/images/{image_id}")
    def image(image_id: ImageIdPath) -> Response:
        # Plain bytes: a FileResponse would add Last-Modified and an ETag derived from the file.
        return Response(store.image_path(image_id).read_bytes(), media_type="image/png")

    return app


__all__ = ["MAX_BODY_BYTES", "AnswerRequest", "BodySizeLimit", "ReaderRequest", "create_app"]
