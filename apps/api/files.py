"""``POST /api/v1/files`` (streamed multipart upload) and ``GET /api/v1/files/<id>`` (download).

The upload is parsed as it arrives (python-multipart's streaming parser) and the part named
``file`` goes straight to disk in chunks (:class:`engine.files.Upload`): a body over the limit is
cut off at the limit, its partial file deleted, and answered 413, so a 1 GB upload never lands
on disk whole. The limit is ``KILN_MAX_UPLOAD`` (default 50MB) or, with
``?field=<app>.<entity>.<field>``, that field's ``max_size``; the field's ``accept`` is checked
from the part's headers, before any byte is written (415).
"""

from __future__ import annotations

from typing import Any

from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response

from apps.api.auth import instance, require_user
from apps.api.errors import ApiError, from_exception
from engine import files
from engine.errors import NotFound, RecordError
from engine.model import Field

# Room for the multipart framing and small form fields next to the file.
ENVELOPE_BYTES = 64 * 1024


class _Parts:
    """What the streaming parser saw in one chunk, in order: part headers, part data, part end."""

    def __init__(self, boundary: bytes) -> None:
        self.events: list[tuple[str, Any]] = []
        self._headers: dict[str, str] = {}
        self._field = b""
        self._value = b""
        self.parser = MultipartParser(boundary, {
            "on_part_begin": self._begin, "on_header_field": self._header_field, "on_header_value": self._header_value,
            "on_header_end": self._header_end, "on_headers_finished": self._headers_finished,
            "on_part_data": self._data, "on_part_end": self._end,
        })  # fmt: skip

    def _begin(self) -> None:
        self._headers = {}

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._field += data[start:end]

    def _header_value(self, data: bytes, start: int, end: int) -> None:
        self._value += data[start:end]

    def _header_end(self) -> None:
        # latin-1 keeps the raw bytes (browsers send UTF-8 filenames); _disposition decodes them.
        self._headers[self._field.decode("latin-1").lower()] = self._value.decode("latin-1")
        self._field = self._value = b""

    def _headers_finished(self) -> None:
        self.events.append(("headers", self._headers))

    def _data(self, data: bytes, start: int, end: int) -> None:
        self.events.append(("data", data[start:end]))

    def _end(self) -> None:
        self.events.append(("end", None))

    def feed(self, chunk: bytes) -> list[tuple[str, Any]]:
        self.parser.write(chunk)
        events, self.events = self.events, []
        return events


def _target_field(request: Request) -> Field | None:
    spec = request.query_params.get("field")
    if not spec:
        return None
    app, _, rest = spec.partition(".")
    entity_name, _, field_name = rest.partition(".")
    compiled = instance(request).compiled.apps.get(app)
    entity = compiled.app.entity(entity_name) if compiled else None
    f = entity.field(field_name) if entity else None
    if f is None or f.disabled or f.type not in ("file", "image"):
        raise ApiError(400, "bad_request", f"no file or image field '{spec}'; write ?field=<app>.<entity>.<field>", {"field": "unknown"})
    return f


def _disposition(headers: dict[str, str]) -> tuple[str | None, str | None]:
    """The part's form name and filename, from its Content-Disposition."""
    _, options = parse_options_header(headers.get("content-disposition", "").encode("latin-1"))
    name, filename = options.get(b"name"), options.get(b"filename")
    return (name.decode("utf-8", "replace") if name is not None else None,
            filename.decode("utf-8", "replace") if filename is not None else None)  # fmt: skip


async def upload(request: Request) -> Response:
    try:
        user = await run_in_threadpool(require_user, request)
        target = _target_field(request)
        limit = target.max_size if target and target.max_size else files.max_upload()
        stored = await _receive(request, limit, target, user.id)
    except RecordError as exc:
        return from_exception(exc)
    return JSONResponse(stored.as_json(), 201)


async def _receive(request: Request, limit: int, target: Field | None, user_id: int) -> files.StoredFile:
    kind, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if kind != b"multipart/form-data" or not boundary:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with the file in a part named 'file'")
    declared = request.headers.get("content-length", "")
    too_large = ApiError(413, "too_large", f"the file is larger than the limit of {limit} bytes", {"file": f"at most {limit} bytes"})
    if declared.isdigit() and int(declared) > limit + ENVELOPE_BYTES:
        raise too_large  # refused before reading a byte
    parts = _Parts(boundary)
    store: files.Upload | None = None
    meta: tuple[str, str] | None = None
    in_file = done = False
    received = 0
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + ENVELOPE_BYTES:
                raise too_large
            for event, value in parts.feed(chunk):
                if event == "headers" and not done:
                    name, filename = _disposition(value)
                    if name == "file" and filename is not None:
                        meta = _check_type(target, filename, value.get("content-type"))
                        # Writing a chunk to local disk takes microseconds; no thread hop needed.
                        store, in_file = files.Upload(instance(request).files_dir, limit), True
                elif event == "data" and in_file and store is not None:
                    store.write(value)
                elif event == "end" and in_file:
                    in_file, done = False, True
        if not done or store is None or meta is None:
            raise ApiError(400, "bad_request", "no complete part named 'file' with a filename", {"file": "required"})
        return await run_in_threadpool(store.finish, instance(request), meta[0], meta[1], user_id)
    except files.FileTooLarge:
        raise too_large from None
    except (MultipartParseError, ClientDisconnect):
        raise ApiError(400, "bad_request", "the multipart body is malformed or was cut short") from None
    finally:
        if store is not None and not store.finished:
            store.discard()


def _check_type(target: Field | None, raw_name: str, declared: str | None) -> tuple[str, str]:
    filename = files.clean_filename(raw_name)
    content_type = files.content_type_of(filename, declared)
    if target is not None and not files.accepts(target, filename, content_type):
        accept = ", ".join(target.accept) or "images"
        raise ApiError(415, "unsupported_media_type", f"{target.name} accepts {accept}; got {filename} ({content_type})",
                       {"file": f"accepted: {accept}"})  # fmt: skip
    return filename, content_type


def download(request: Request) -> Response:
    user = require_user(request)
    stored = files.get(instance(request), request.path_params["file_id"])
    if stored is None or not files.may_download(instance(request), stored, user):
        # The same answer for "no such file" and "not yours": ids are not probed.
        raise NotFound("no such file, or you may not read it")
    path = files.path_of(instance(request), stored)
    if not path.is_file():
        raise NotFound("the file's content is missing from storage")
    return FileResponse(
        path, media_type=stored.content_type, filename=stored.filename, content_disposition_type="attachment",
        headers={"X-Content-Type-Options": "nosniff", "Content-Security-Policy": "sandbox", "Cache-Control": "private"},
    )  # fmt: skip
