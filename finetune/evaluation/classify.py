"""Classification as chat: labelled CSV rows become prompt/label pairs; metrics and the baselines they must beat."""

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
    text: str
    label: int


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
                "set data.text_column and data.label_column"
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
    return Conversation.pair(data.prompt.format(text=row.text), data.labels[row.label], data.system, label=row.label)


def load_split(data: DataConfig) -> tuple[list[LabelledText], list[LabelledText]]:
    rows = read_csv(data.train, data)
    if data.val:
        return rows, read_csv(data.val, data)
    return split_rows(rows, data.val_split, data.split_seed)


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
