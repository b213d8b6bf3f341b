"""Classification as chat: labelled CSV rows or records whose answer is the label become prompt/label pairs;
metrics and the baselines they must beat."""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from finetune.data.formats import Conversation, DataError
from finetune.training.config import DataConfig

log = logging.getLogger(__name__)


@dataclass
class LabelledText:
    """A text and its label's index in data.labels; `prompt`/`system` are a record's own turns (None: CSV rows,
    whose prompt is data.prompt around the text)."""

    text: str
    label: int
    prompt: str | None = None
    system: str | None = None


def read_csv(path: str | Path, data: DataConfig) -> list[LabelledText]:
    """Rows of `text_column` with an integer `label_column` indexing `data.labels`; bad rows are logged and skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file (data.train for task=classify is a CSV with a header row)")
    rows: list[LabelledText] = []
    skipped = 0
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.DictReader(f)
        missing = {data.text_column, data.label_column} - set(reader.fieldnames or [])
        if missing:
            raise DataError(
                f"{path}: no column {', '.join(sorted(missing))} (header: {', '.join(reader.fieldnames or [])}); "
                "set data.text_column and data.label_column, or give messages/Alpaca records whose answer is the "
                "label (data.format: auto)"
            )
        for row in reader:
            text = (row[data.text_column] or "").strip()
            try:
                label = int(row[data.label_column])
            except (TypeError, ValueError):
                label = -1
            if not text or not 0 <= label < len(data.labels):
                skipped += 1
                continue
            rows.append(LabelledText(text, label))
    if skipped:
        top = len(data.labels) - 1
        log.warning("%s: skipped %d rows without text or with a label outside 0..%d", path, skipped, top)
    return rows


def split_rows(rows: list[LabelledText], test: float, seed: int) -> tuple[list[LabelledText], list[LabelledText]]:
    """(train, test) as sklearn's train_test_split(test_size=test, random_state=seed) cuts them."""
    from sklearn.model_selection import train_test_split

    train, held = train_test_split(rows, test_size=test, random_state=seed)
    return list(train), list(held)


def to_conversation(row: LabelledText, data: DataConfig) -> Conversation:
    if row.prompt is not None:
        return Conversation.pair(row.prompt, data.labels[row.label], row.system or data.system, label=row.label)
    return Conversation.pair(data.prompt.format(text=row.text), data.labels[row.label], data.system, label=row.label)


def _is_csv(path: str, data: DataConfig) -> bool:
    return data.format == "csv" or (data.format == "auto" and Path(path).suffix.lower() == ".csv")


def _records(path: str, data: DataConfig) -> list[tuple[str, str, str | None]]:
    """(last user turn, answer, system) of each conversation in a messages/Alpaca/ShareGPT file."""
    from finetune.data.formats import read

    if not Path(path).is_file():
        raise DataError(f"{path}: no such file (data.train for task=classify: a labelled CSV or records whose "
                        "answer is the label)")  # fmt: skip
    convs, problems = read(path, None if data.format == "auto" else data.format)  # type: ignore[arg-type]
    if problems:
        log.warning("%s: skipped %d invalid records (run `finetune data validate %s`)", path, len(problems), path)
    if not convs:
        raise DataError(f"{path}: no valid records (task=classify)")
    return [(c.messages[-2]["content"], c.messages[-1]["content"].strip(), c.system) for c in convs]


def _labels_of(records: list[tuple[str, str, str | None]], data: DataConfig, path: str) -> None:
    """Make data.labels name every answer: kept when they do, else the answers found (sorted), said in a log."""
    from finetune.data.labelled import MAX_LABELS

    found = sorted({answer for _, answer, _ in records})
    if len(found) > MAX_LABELS:
        raise DataError(f"{path}: the answers take {len(found)} different values; task=classify needs records "
                        "whose answer is a label (e.g. 好评/差评), or use task=chat")  # fmt: skip
    if len(found) < 2:
        raise DataError(f"{path}: every answer is {found[0]!r}; task=classify needs at least two labels")
    if not set(found) <= set(data.labels):
        log.warning("data.labels %s do not name every answer; using the labels found in the data: %s",
                    data.labels, found)  # fmt: skip
        data.labels = found


def _from_records(records: list[tuple[str, str, str | None]], data: DataConfig) -> list[LabelledText]:
    index = {name: i for i, name in enumerate(data.labels)}
    return [LabelledText(prompt, index[answer], prompt, system) for prompt, answer, system in records]


def load_split(data: DataConfig) -> tuple[list[LabelledText], list[LabelledText]]:
    """(train, test) rows: a CSV's (data.text_column/label_column) or a record file's (answer = label; the labels
    found in the data replace data.labels when those do not name them all)."""
    if _is_csv(data.train, data):
        rows = read_csv(data.train, data)
        if data.val:
            return rows, read_csv(data.val, data)
        return split_rows(rows, data.val_split, data.split_seed)
    train = _records(data.train, data)
    held = _records(data.val, data) if data.val else []
    _labels_of(train + held, data, data.train)
    if data.val:
        return _from_records(train, data), _from_records(held, data)
    return split_rows(_from_records(train, data), data.val_split, data.split_seed)


def metrics(y_true: list[int], y_pred: list[int], labels: list[str]) -> dict[str, Any]:
    """Accuracy, per-class and macro precision/recall/F1, and the confusion matrix (rows: true, columns: predicted)."""
    from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

    ids = list(range(len(labels)))
    p, r, f, support = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    mp, mr, mf, _ = precision_recall_fscore_support(y_true, y_pred, labels=ids, average="macro", zero_division=0)
    return {
        "n": len(y_true),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_precision": float(mp),
        "macro_recall": float(mr),
        "macro_f1": float(mf),
        "per_class": {
            name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(support[i])}
            for i, name in enumerate(labels)
        },
        "confusion_matrix": {"labels": labels, "matrix": confusion_matrix(y_true, y_pred, labels=ids).tolist()},
    }


def majority_baseline(train: list[LabelledText], test: list[LabelledText]) -> list[int]:
    top = Counter(r.label for r in train).most_common(1)[0][0]
    return [top] * len(test)


def tfidf_baseline(train: list[LabelledText], test: list[LabelledText], seed: int = 0) -> list[int]:
    """Character 1-2-gram TF-IDF and logistic regression: a strong, cheap baseline for short Chinese reviews."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = TfidfVectorizer(analyzer="char", ngram_range=(1, 2), min_df=2, sublinear_tf=True)
    x_train = vec.fit_transform([r.text for r in train])
    clf = LogisticRegression(max_iter=1000, random_state=seed)
    clf.fit(x_train, [r.label for r in train])
    return [int(v) for v in clf.predict(vec.transform([r.text for r in test]))]


def baselines(train: list[LabelledText], test: list[LabelledText], labels: list[str]) -> dict[str, Any]:
    y = [r.label for r in test]
    return {
        "majority": metrics(y, majority_baseline(train, test), labels),
        "tfidf_logreg": metrics(y, tfidf_baseline(train, test), labels),
    }
