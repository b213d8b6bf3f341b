"""Fine-tuned model registry: the models jobs produced, shared by API replicas and workers through one SQLite file."""

from __future__ import annotations

import builtins
import dataclasses
from dataclasses import dataclass
from pathlib import Path

from finetune.jobs.db import Database

DB_FILE = "models.sqlite3"
TASKS = ("chat", "classify")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    id TEXT PRIMARY KEY,
    base_model TEXT NOT NULL,
    adapter_path TEXT NOT NULL,
    job_id TEXT,
    task TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    system_prompt TEXT,
    persona TEXT
)
"""
_COLUMNS = ("id", "base_model", "adapter_path", "job_id", "task", "created_at", "system_prompt", "persona")
_FIELDS = ", ".join(_COLUMNS)
_MARKS = ", ".join("?" * len(_COLUMNS))


@dataclass(frozen=True)
class FineTunedModel:
    """One servable fine-tuned model: a LoRA adapter on a base, named like OpenAI's `ft:<base>:<suffix>:<job id>`."""

    id: str  # "ft:gemma-3-270m:mysuffix:ftjob-abc123"
    base_model: str  # the base as the job named it, e.g. "gemma-3-270m" or a path
    adapter_path: str  # folder holding adapter_config.json
    job_id: str | None
    task: str  # "chat" | "classify"
    created_at: int  # unix seconds
    system_prompt: str | None = None  # system prompt shared by the training records, if any
    persona: str | None = None  # persona name the model is bound to, if any


class ModelRegistry:
    """The fine-tuned models in `data_dir/finetune/models.sqlite3` (WAL, so readers never block the writer).

    Every call reads the file: no cache, so a row a worker adds is seen by every API replica at once."""

    def __init__(self, data_dir: Path) -> None:
        self.path = Path(data_dir) / "finetune" / DB_FILE
        self._db = Database(self.path, _SCHEMA).transaction  # synchronous FULL: a registered model is durable

    def add(self, model: FineTunedModel) -> None:
        """Insert `model`, or replace the row with its id (a resumed job finishing twice). ValueError: unknown task."""
        if model.task not in TASKS:
            raise ValueError(f"task must be one of {', '.join(TASKS)}, not {model.task!r}")
        values = dataclasses.astuple(model)
        with self._db() as db:
            db.execute(f"INSERT OR REPLACE INTO models ({_FIELDS}) VALUES ({_MARKS})", values)

    def list(self) -> builtins.list[FineTunedModel]:
        """All models, oldest first (created_at, then id)."""
        with self._db() as db:
            rows = db.execute(f"SELECT {_FIELDS} FROM models ORDER BY created_at, id").fetchall()
        return [FineTunedModel(*row) for row in rows]

    def get(self, model_id: str) -> FineTunedModel | None:
        """The model named `model_id`, or None."""
        with self._db() as db:
            row = db.execute(f"SELECT {_FIELDS} FROM models WHERE id = ?", (model_id,)).fetchone()
        return FineTunedModel(*row) if row else None

    def delete(self, model_id: str) -> bool:
        """Remove the row (the adapter folder stays on disk); False when there was none."""
        with self._db() as db:
            cursor = db.execute("DELETE FROM models WHERE id = ?", (model_id,))
        return cursor.rowcount > 0

    def bind(self, model_id: str, persona: str | None) -> FineTunedModel:
        """Bind the model to `persona` (None unbinds) and return the updated model. KeyError: no such model.

        A persona is served by at most one fine-tuned model: binding unbinds any other model bound to it."""
        with self._db() as db:
            if persona is not None:
                db.execute("UPDATE models SET persona = NULL WHERE persona = ? AND id != ?", (persona, model_id))
            cursor = db.execute("UPDATE models SET persona = ? WHERE id = ?", (persona, model_id))
            if cursor.rowcount == 0:
                raise KeyError(model_id)
        model = self.get(model_id)
        if model is None:  # deleted between the update and the read
            raise KeyError(model_id)
        return model
