"""Labelled data for classification: labelled CSV rows as conversations, and a check of how the labels are spread."""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from finetune.data.formats import Conversation, DataError, Problem

# A record set reads as labelled (classification) data when its answers take at most this many values.
MAX_LABELS = 20
EXTREME_SHARE = 0.9


@dataclass
class CsvColumns:
    """How a labelled CSV becomes conversations: which columns, label names by value, the prompt around the text."""

    text: str = "review"
    label: str = "label"
    names: dict[str, str] = field(default_factory=dict)  # CSV value -> label name ({"0": "差评", "1": "好评"})
    prompt: str = "{text}"
    system: str | None = None


def parse_label_names(spec: str) -> dict[str, str]:
    """`0=差评,1=好评` as {"0": "差评", "1": "好评"}; raises DataError naming the bad part."""
    names: dict[str, str] = {}
    for part in spec.replace("，", ",").split(","):
        if not part.strip():
            continue
        value, sep, name = part.partition("=")
        if not sep or not value.strip() or not name.strip():
            raise DataError(f"--labels: {part.strip()!r} is not VALUE=NAME; write e.g. 0=差评,1=好评")
        names[value.strip()] = name.strip()
    return names


def read_labelled_csv(path: str | Path, cols: CsvColumns) -> tuple[list[Conversation], list[Problem]]:
    """One conversation per row (user: the prompt with the row's text, assistant: the label's name); a row
    with no text, or a label value outside `cols.names` when names are given, is a Problem with its line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    if "{text}" not in cols.prompt:
        raise DataError(f"--prompt must contain {{text}} (where the row's text goes), got {cols.prompt!r}")
    convs: list[Conversation] = []
    problems: list[Problem] = []
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in (cols.text, cols.label) if c not in header]
        if missing:
            raise DataError(f"{path}: no column {', '.join(missing)} (header: {', '.join(header)}); "
                            "name them with --text-column and --label-column")  # fmt: skip
        for row in reader:
            line = reader.line_num
            text, value = (row.get(cols.text) or "").strip(), (row.get(cols.label) or "").strip()
            if not text or not value:
                problems.append(Problem(str(path), line, f"empty {cols.text if not text else cols.label}"))
                continue
            if cols.names and value not in cols.names:
                known = ", ".join(cols.names)
                problems.append(Problem(str(path), line, f"label {value!r} is not one of --labels ({known})"))
                continue
            answer = cols.names.get(value, value)
            convs.append(Conversation.pair(cols.prompt.format(text=text), answer, cols.system, label=answer))
    return convs, problems


def answers(convs: list[Conversation]) -> list[str]:
    return [c.messages[-1]["content"].strip() for c in convs]


def label_warning(convs: list[Conversation]) -> str | None:
    """A sentence when the records look labelled (few distinct answers) and one label is all of them or an
    extreme share (a file sorted by label, a head taken from it); None otherwise."""
    counts = Counter(answers(convs))
    if len(convs) < 10 or len(counts) > MAX_LABELS:
        return None
    top, n = counts.most_common(1)[0]
    share = n / len(convs)
    spread = ", ".join(f"{k} {v}" for k, v in counts.most_common())
    if len(counts) == 1:
        return (f"every record has the label {top!r} ({n} of {n}): a classifier learns nothing from it; is the file "
                "sorted by label? take rows at random (e.g. `finetune data split`), not the first ones")
    if share >= EXTREME_SHARE:
        return (f"one label makes up {share:.0%} of the records ({spread}): a model that always answers {top!r} "
                "scores that accuracy; balance the set or compare against the majority-class baseline")
    return None
