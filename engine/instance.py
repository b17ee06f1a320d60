"""An instance: the compiled definitions, the database, and the services built on them."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine

from engine.compiler import Compiled, compile_definitions
from engine.db import DEFAULT_URL, connect
from engine.users import UserDirectory


@dataclass
class Instance:
    compiled: Compiled
    engine: Engine
    definitions: Path
    files_dir: Path = field(default_factory=lambda: Path("data/files"))

    @classmethod
    def open(
        cls,
        definitions: Path | str = "definitions",
        db_url: str = DEFAULT_URL,
        env: Mapping[str, str] | None = None,
        files_dir: Path | str | None = None,
    ) -> Instance:
        definitions = Path(definitions)
        compiled = compile_definitions(definitions, os.environ if env is None else env)
        engine = connect(db_url)
        return cls(compiled, engine, definitions, Path(files_dir) if files_dir else Path("data/files"))

    def __post_init__(self) -> None:
        system = self.compiled.schema.system
        self.users = UserDirectory(system["kiln_users"], system["kiln_user_roles"])
        self._records: dict[str, object] = {}
        # Called after a commit that queued notifications (engine/jobs.py wakes the deliverer).
        self.outbox_listeners: list[Callable[[], None]] = []

    @property
    def schema(self):  # noqa: ANN201 - engine.tables.Schema
        return self.compiled.schema

    def records(self, app: str):  # noqa: ANN201 - engine.records.Records
        from engine.records import Records

        if app not in self._records:
            self._records[app] = Records(self, self.compiled.app(app))
        return self._records[app]

    def outbox_committed(self) -> None:
        for listener in self.outbox_listeners:
            listener()

    def close(self) -> None:
        self.engine.dispose()
