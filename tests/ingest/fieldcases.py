"""The field inputs of issue 11 (../shared/cases/field), read in place; tests that need one skip without it."""

from pathlib import Path

import pytest

FIELD = Path(__file__).resolve().parents[3] / "shared" / "cases" / "field"


def field_case(name: str) -> Path:
    p = FIELD / name
    if not p.exists():
        pytest.skip(f"field case not available: {p}")
    return p
