"""File storage: uploaded files on disk under ``instance.files_dir``, one row each in ``kiln_files``.

A file is written as it arrives (:class:`Upload`), hashed on the way, and counted against a size
limit, so an upload larger than the limit stops at the limit and leaves nothing behind. Only a
complete file gets its row and its final name; a record's file field then holds the file's id.

Who may download a file: the user who uploaded it, and anyone who may read a record that
references it through a field they can see. That second check asks the query layer for the
readable rows (:meth:`engine.queries.Query.readable`), so a download follows the same row scope,
state visibility and hidden fields as every other read.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import mimetypes
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import exists, insert, or_, select

from engine import accounts, permissions
from engine.db import read, write
from engine.model import Field

if TYPE_CHECKING:
    from engine.instance import Instance

DEFAULT_MAX_UPLOAD = 50 * 1024 * 1024
FILE_ID = re.compile(r"^[0-9a-f]{32}$")
# Shown inline by browsers without risk; everything else downloads as an attachment.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp")
_UNSAFE_NAME = re.compile(r"[\x00-\x1f\x7f/\\]+")


class FileTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the file is larger than the limit of {limit} bytes")
        self.limit = limit


@dataclass(frozen=True)
class StoredFile:
    id: str
    filename: str
    content_type: str
    size: int
    sha256: str
    path: str
    created_by: int | None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "filename": self.filename, "size": self.size, "content_type": self.content_type}


def max_upload(environ: dict[str, str] | None = None) -> int:
    """The instance-wide upload limit in bytes: ``KILN_MAX_UPLOAD`` (e.g. 50MB, 512KB, 1048576)."""
    from engine.builder import parse_size

    raw = (environ if environ is not None else os.environ).get("KILN_MAX_UPLOAD", "").strip()
    try:
        return parse_size(raw if not raw.isdigit() else int(raw)) or DEFAULT_MAX_UPLOAD
    except ValueError:
        return DEFAULT_MAX_UPLOAD


def clean_filename(name: str | None) -> str:
    """The last path segment without control characters, at most 300 characters (the column)."""
    base = re.split(r"[/\\]", name or "")[-1]
    base = _UNSAFE_NAME.sub("", base).strip().strip(".") or "file"
    if len(base) > 300:
        stem, dot, ext = base.rpartition(".")
        base = (stem[: 290] + dot + ext[:9]) if dot and len(ext) < 10 else base[:300]
    return base


def content_type_of(filename: str, declared: str | None) -> str:
    declared = (declared or "").split(";")[0].strip().lower()
    if re.fullmatch(r"[a-z0-9][a-z0-9!#$&^_.+-]{0,99}/[a-z0-9][a-z0-9!#$&^_.+-]{0,99}", declared):
        return declared
    return mimetypes.guess_type(filename)[0] or "application/octet-stream"


def accepts(f: Field, filename: str, content_type: str) -> bool:
    """Whether ``f`` takes this file: its extension or MIME type is in ``accept`` (an image field
    without ``accept`` takes images)."""
    accept = f.accept or (("image/*", *IMAGE_EXTENSIONS) if f.type == "image" else ())
    if not accept:
        return True
    lower = filename.lower()
    for a in accept:
        a = a.lower()
        if a.startswith("."):
            if lower.endswith(a):
                return True
        elif a.endswith("/*"):
            if content_type.startswith(a[:-1]):
                return True
        elif content_type == a:
            return True
    return False


class Upload:
    """One file being received: written under a temporary name, hashed and counted as it comes."""

    def __init__(self, files_dir: Path, limit: int) -> None:
        self.id = uuid.uuid4().hex
        self.limit = limit
        self.size = 0
        self.finished = False
        self.relpath = f"{self.id[:2]}/{self.id}"
        self.path = files_dir / self.relpath
        self.partial = self.path.with_name(self.id + ".part")
        self.partial.parent.mkdir(parents=True, exist_ok=True)
        self._hash = hashlib.sha256()
        self._out = open(self.partial, "wb")  # noqa: SIM115 - closed by finish() or discard()

    def write(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.limit:
            self.discard()
            raise FileTooLarge(self.limit)
        self._hash.update(chunk)
        self._out.write(chunk)

    def discard(self) -> None:
        self._out.close()
        self.partial.unlink(missing_ok=True)

    def finish(self, instance: Instance, filename: str, content_type: str, user_id: int | None) -> StoredFile:
        """Close the file, give it its final name and record it; a failed insert removes it."""
        self._out.close()
        stored = StoredFile(self.id, filename, content_type, self.size, self._hash.hexdigest(), self.relpath, user_id)
        os.replace(self.partial, self.path)
        try:
            with write(instance.engine) as conn:
                conn.execute(
                    insert(instance.schema.system["kiln_files"]).values(
                        id=stored.id, filename=filename, content_type=content_type, size=stored.size, sha256=stored.sha256,
                        path=stored.path, created_by=user_id, created_at=dt.datetime.now(dt.UTC),
                    )
                )  # fmt: skip
        except BaseException:
            self.path.unlink(missing_ok=True)
            raise
        self.finished = True
        return stored


def get(instance: Instance, file_id: str) -> StoredFile | None:
    if not FILE_ID.match(file_id):
        return None
    files = instance.schema.system["kiln_files"]
    with read(instance.engine) as conn:
        row = conn.execute(select(files).where(files.c.id == file_id)).mappings().first()
    if row is None:
        return None
    return StoredFile(row["id"], row["filename"], row["content_type"], row["size"], row["sha256"], row["path"], row["created_by"])


def path_of(instance: Instance, stored: StoredFile) -> Path:
    return instance.files_dir / stored.path


def may_download(instance: Instance, stored: StoredFile, user: accounts.User) -> bool:
    """The uploader, an instance admin, or a user who may read a record referencing the file
    through a field their roles do not hide."""
    if user.is_admin or (stored.created_by is not None and stored.created_by == user.id):
        return True
    for app_name, compiled in instance.compiled.apps.items():
        entities = [e for e in compiled.app.entities if any(f.type in ("file", "image") and not f.disabled for f in e.fields)]
        if not entities:
            continue
        actor = accounts.actor_for(instance.engine, user.id, app_name)
        records = instance.records(app_name)
        for entity in entities:
            hidden = permissions.hidden_fields(entity, actor)
            fields = [f for f in entity.fields if f.type in ("file", "image") and not f.disabled and f.name not in hidden]
            if not fields:
                continue
            tables = records.tables(entity)
            refs = []
            for f in fields:
                if f.is_multi:
                    child = tables.children[f.name]
                    refs.append(exists(select(child.c.record_id).where(child.c.record_id == tables.main.c.id, child.c.value == stored.id)))
                else:
                    refs.append(tables.main.c[f.name] == stored.id)
            query = select(tables.main.c.id).where(or_(*refs), records.query.readable(entity, actor)).limit(1)
            with read(instance.engine) as conn:
                if conn.execute(query).first() is not None:
                    return True
    return False
