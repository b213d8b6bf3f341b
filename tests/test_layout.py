"""Imports follow the data flow: ingest never imports service or finetune; finetune never imports service."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"ingest": {"service", "finetune"}, "finetune": {"service"}}


def imported_packages(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_follow_the_arrows(package):
    files = list((ROOT / package).rglob("*.py"))
    assert files
    for f in files:
        bad = imported_packages(f) & FORBIDDEN[package]
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"


def _ingest_imports(path: Path) -> set[str]:
    """The ingest modules a file imports (relative or absolute)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                names.add(node.module.split(".")[0])
            else:
                names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("ingest."):
            names.add(node.module.split(".")[1])
        elif isinstance(node, ast.ImportFrom) and node.module == "ingest":
            names |= {a.name for a in node.names}
    return names


def test_the_read_side_of_ingest_does_not_load_the_write_side():
    """retrieval.py (what the service reads through) and every ingest module it imports, transitively,
    sit on kb.py beside pipeline.py, never on it."""
    seen, todo = set(), ["retrieval"]
    while todo:
        name = todo.pop()
        if name in seen or not (ROOT / "ingest" / f"{name}.py").is_file():
            continue
        seen.add(name)
        todo += sorted(_ingest_imports(ROOT / "ingest" / f"{name}.py"))
    assert "kb" in seen and "store" in seen
    write_side = {"pipeline", "writer", "cli"}
    assert not seen & write_side, f"the read side imports {seen & write_side}"


CHROMA = ("chromadb", "llama_index.vector_stores.chroma")


def _chroma_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = set()
    for node in ast.walk(tree):
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else []
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            modules = [node.module]
        found |= {m for m in modules if any(m == c or m.startswith(c + ".") for c in CHROMA)}
    return found


def test_only_the_store_modules_talk_to_chroma():
    """client.py opens Chroma, store.py (and pieces.py, through the collections store.py hands it) use it."""
    files = [f for package in ("ingest", "service", "finetune") for f in (ROOT / package).rglob("*.py")]
    users = {str(f.relative_to(ROOT)) for f in files if _chroma_imports(f)}
    assert users == {"ingest/client.py", "ingest/store.py"}


MAX_MODULE_LINES, MAX_FUNCTION_LINES = 400, 80


def test_modules_and_functions_stay_readable():
    """One module per stage, split past 400 lines; no function past 80 (DESIGN.md's house style)."""
    too_long = []
    for f in (f for package in ("ingest", "service", "finetune") for f in (ROOT / package).rglob("*.py")):
        text = f.read_text(encoding="utf-8")
        name = str(f.relative_to(ROOT))
        if (n := len(text.splitlines())) > MAX_MODULE_LINES:
            too_long.append(f"{name}: {n} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = (node.end_lineno or node.lineno) - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)
