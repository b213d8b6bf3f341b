"""The console tabs' key check: the same key ring as the API's knowledge-base and fine-tuning endpoints."""

from __future__ import annotations

from typing import Any

from ..keys import KeyRing

CONSOLE_OFF = ("the knowledge-base and fine-tune tabs need an API key, and this service has none: create one with "
               "`kongming keys add` (or set KONGMING_API_KEYS), then enter it in the «API key» field above")
CONSOLE_KEY = "enter a valid API key in the «API key» field above: the knowledge-base and fine-tune tabs need one"


def console_refusal(ring: KeyRing, key: str | None) -> str | None:
    """Why a console action is refused, or None: like /v1/kb and /v1/fine_tuning, it needs a valid key always,
    and is off while no key exists (read on every action: keys added or revoked while the service runs count)."""
    if not ring.configured():
        return CONSOLE_OFF
    return None if ring.identify((key or "").strip() or None) is not None else CONSOLE_KEY


def require_key(ring: KeyRing, key: str | None) -> None:
    """Raise gr.Error (shown by the page as a message) when the console refuses this key."""
    refused = console_refusal(ring, key)
    if refused is not None:
        import gradio as gr

        raise gr.Error(refused, title="API key")


def table(rows: list[dict[str, Any]], columns: list[str]) -> Any:
    """A pandas DataFrame of `rows` with `columns` (what gr.Dataframe and gr.LinePlot take)."""
    import pandas as pd

    return pd.DataFrame([{c: r.get(c) for c in columns} for r in rows], columns=columns)
