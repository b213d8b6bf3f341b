"""The router: per message, `rag`, `persona` or `both`, from signals a fitted model weighs, with a reason."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ingest.fsio import write_text_atomic
from ingest.normalize import to_simplified, to_traditional

from ..protocol import Route

ROUTES: tuple[Route, ...] = ("rag", "persona", "both")
DEFAULT_MODEL = Path(__file__).with_name("router_model.json")
KNN = 3

# Signals read from the text. Persona-specific address terms come from the persona's aliases.
_SECOND_PERSON = re.compile(r"你|您|汝|尔等|足下|阁下|\byou\b|\byour\b|\byourself\b", re.I)
_TITLES = re.compile(r"丞相|军师|先生|武侯|卧龙|主公|\bprime minister\b|\bstrategist\b|\bmaster\b|\bsir\b", re.I)
_GREETING = re.compile(r"^(?:你好|您好|嗨|哈喽|在吗|早上好|晚上好|hi\b|hello|hey)|久仰|拜见|请教", re.I)
_FACT_Q = re.compile(
    r"谁|什么|哪|几|多少|多[高远大长重久深宽]|何时|何地|何人|何处|为何|为什么|怎么|怎样|如何|是否|有没有|吗|经过|结果|第.{1,4}回"
    r"|\bwho\b|\bwhat\b|\bwhen\b|\bwhere\b|\bwhich\b|\bwhy\b|\bhow\b|\bdid\b",
    re.I,
)
_OPINION = re.compile(
    r"觉得|认为|以为|看法|怎么看|评价|感受|心情|喜欢|后悔|遗憾|建议|劝|教我|安慰|开心|难过|累|烦|想念|心里"
    r"|\bthink\b|\bfeel\b|\bopinion\b|\badvice\b|\badvise\b|\bregret\b|\blike\b",
    re.I,
)
_PAST_SELF = re.compile(r"当年|当时|那时|那年|您当|你当|你那|您那|昔日|彼时|back then|at the time|did you|were you",
                        re.I)
_NOVEL = re.compile(r"三国|演义|书中|书里|原文|小说|哪一回|第.{1,4}回|章节|\bnovel\b|\bbook\b|\bchapter\b", re.I)
# a short message asking the conversation to go on (那后来呢？ 然后呢 接着讲 他呢？): it takes the route of the user
# message before it, whose subject it continues
_GO_ON = re.compile(r"后来|然后|接着|继续|还有|之后|再说|再讲|下文|详细|具体|展开|呢[？?]?$"
                    r"|^(?:and )?then\b|\bgo on\b|\bcontinue\b|\bwhat next\b|\bwhat happened next\b|\bmore\b", re.I)
_OWN_SIGNALS = ("persona_named", "second_person", "title", "greeting", "opinion", "entities")
GO_ON = "asks the conversation to go on (the route of the message before)"
_CALL = "，,！!：:啊呀"  # after a name that opens the message, it calls him (孔明，… / 孔明啊 / Zhuge Liang, …)
_HAN = re.compile(r"[\u4e00-\u9fff]")
_ASCII_WORD = re.compile(r"[A-Za-z]+")


@dataclass
class RouteDecision:
    route: Route
    scores: dict[str, float]
    reason: str
    forced: bool = False
    persona: str | None = None
    features: dict[str, float] = field(default_factory=dict)


@dataclass
class Signals:
    """What the router knows about the knowledge base and the persona, injected (and fakeable in tests)."""

    entities: Callable[[], frozenset[str]]
    keyword_top: Callable[[str], tuple[float, int]]
    persona_names: Sequence[str]


def _count(pattern: re.Pattern[str], text: str) -> float:
    return float(len(pattern.findall(text)))


def _names_in(text: str, names: frozenset[str] | Sequence[str], limit: int = 8) -> list[str]:
    lowered = text.lower()
    found = [n for n in names if n.lower() in lowered]
    found.sort(key=len, reverse=True)
    out: list[str] = []
    for n in found:  # drop names inside a longer one that was found ("孔明" in "诸葛孔明")
        if not any(n in o for o in out):
            out.append(n)
        if len(out) >= limit:
            break
    return out


def text_features(text: str, signals: Signals, prefix: str = "") -> tuple[dict[str, float], dict[str, list[str]]]:
    """Features of one message (without the embedding), plus the names that explain them. A message in traditional
    script is read as simplified (the signals' words and the fitted model are), and names are looked for in either
    script (a knowledge base keeps its documents' own)."""
    text = to_simplified(text)
    either = text + "\n" + to_traditional(text) if _HAN.search(text) else text
    persona = _names_in(text, list(signals.persona_names))
    entities = [e for e in _names_in(either, signals.entities(), limit=16)
                if not any(to_simplified(e) in p or p in to_simplified(e) for p in persona)]
    top, n_tokens = signals.keyword_top(text) if text.strip() else (0.0, 0)
    han = len(_HAN.findall(text))
    words = len(_ASCII_WORD.findall(text))
    f = {
        "persona_named": min(len(persona), 3),
        "second_person": min(_count(_SECOND_PERSON, text), 3),
        "title": min(_count(_TITLES, text), 2),
        "greeting": float(bool(_GREETING.search(text.strip()))),
        "fact_question": min(_count(_FACT_Q, text), 3),
        "opinion": min(_count(_OPINION, text), 3),
        "past_self": min(_count(_PAST_SELF, text), 2),
        "novel_ref": min(_count(_NOVEL, text), 2),
        "entities": min(len(entities), 4),
        "kw_top": top / max(n_tokens, 1) if n_tokens else 0.0,
        "kw_top_log": math.log1p(top),
        "length": math.log1p(han + words),
        "english": words / max(han + words, 1),
    }
    # names the persona and speaks to no one (诸葛亮最喜欢什么？): a question about him, rag (eval/ROUTES.md rule 1)
    opening = text.strip().lower()
    called = any(opening.startswith(n.lower()) and opening[len(n) : len(n) + 1] in tuple(_CALL) for n in persona)
    f["third_person"] = float(bool(persona) and not f["second_person"] and not f["title"] and not called)
    return {prefix + k: float(v) for k, v in f.items()}, {"persona": persona, "entities": entities}


def conversation_features(
    messages: Sequence[dict[str, str]], signals: Signals
) -> tuple[str, dict[str, float], dict[str, list[str]]]:
    """The last user message's features, plus those of the previous user turn (a follow-up like "那后来呢？"
    inherits its subject, when the conversation has one)."""
    users = [m["content"] for m in messages if m.get("role") == "user"]
    last = users[-1] if users else ""
    f, names = text_features(last, signals)
    if len(users) > 1:
        prev, _ = text_features(users[-2], signals, prefix="prev_")
        f.update({k: v for k, v in prev.items() if k in _PREV_KEYS})
    else:
        f.update(dict.fromkeys(_PREV_KEYS, 0.0))
    f["has_history"] = float(len(users) > 1)
    # A short message continues the conversation's subject only when it has one: the previous user turn named
    # something of the knowledge base or asked a factual question. After "你好", "What is the capital of France?"
    # is a new question, not a follow-up.
    subject = f["prev_entities"] > 0 or f["prev_fact_question"] > 0
    f["short_followup"] = float(len(users) > 1 and subject and f["length"] < math.log1p(8))
    return last, f, names


_PREV_KEYS = ("prev_persona_named", "prev_second_person", "prev_title", "prev_entities", "prev_fact_question",
              "prev_opinion", "prev_kw_top")


@dataclass
class RouterModel:
    """A multinomial logistic regression over the features, plus labelled example messages whose
    embeddings give the similarity features. Fitted by `kongming fit router`."""

    features: list[str]
    mean: list[float]
    scale: list[float]
    coef: list[list[float]]  # one row per route, in ROUTES order
    intercept: list[float]
    examples: list[dict[str, str]]  # {"message", "route"}
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> RouterModel:
        return cls(**json.loads(path.read_text(encoding="utf-8")))

    def save(self, path: Path) -> None:
        write_text_atomic(path, json.dumps(self.__dict__, ensure_ascii=False, indent=1))


def knn_features(query: np.ndarray, examples: np.ndarray, labels: np.ndarray, exclude: int | None = None) -> dict:
    """Mean cosine of the `KNN` closest examples of each route, relative to the best route's."""
    sims = examples @ query
    if exclude is not None:
        sims = sims.copy()
        sims[exclude] = -np.inf
    raw = {}
    for i, r in enumerate(ROUTES):
        s = sims[labels == i]
        s = s[np.isfinite(s)]
        raw[r] = float(np.mean(np.sort(s)[-KNN:])) if len(s) else 0.0
    best = max(raw.values())
    return {f"sim_{r}": (raw[r] - best) * 10.0 for r in ROUTES}


# (phrase when the signal is present, phrase when it is absent)
_EXPLAIN: dict[str, tuple[str, str]] = {
    "persona_named": ("names the persona", "does not name the persona"),
    "second_person": ("speaks to 'you'", "does not speak to 'you'"),
    "title": ("uses a form of address (丞相/先生...)", "uses no form of address"),
    "greeting": ("is a greeting", "is not a greeting"),
    "fact_question": ("asks a factual question", "asks no factual question"),
    "opinion": ("asks for an opinion, advice or feelings", "asks for no opinion"),
    "past_self": ("asks about the persona's own past", "does not ask about the persona's past"),
    "novel_ref": ("refers to the novel or a chapter", "does not refer to the novel"),
    "entities": ("names people/places of the knowledge base", "names nothing in the knowledge base"),
    "kw_top": ("its words match the knowledge base", "its words barely match the knowledge base"),
    "kw_top_log": ("its words match the knowledge base", "its words barely match the knowledge base"),
    "length": ("is long", "is short"),
    "english": ("is in English", "is in Chinese"),
    "third_person": ("names the persona without speaking to him", "does not speak of the persona in the third person"),
    "has_history": ("continues a conversation", "opens the conversation"),
    "short_followup": ("is a short follow-up", "is not a short follow-up"),
    "sim_rag": ("resembles factual questions", "does not resemble factual questions"),
    "sim_persona": ("resembles conversation with the persona", "does not resemble chat with the persona"),
    "sim_both": ("resembles questions to the persona about events", "does not resemble questions to the persona"),
}


def _phrase(name: str, value: float, mean: float, names: dict[str, list[str]]) -> str:
    prev = name.startswith("prev_")
    base = name.removeprefix("prev_")
    present_text, absent_text = _EXPLAIN.get(base, (base, "no " + base))
    if base.startswith("sim_"):
        present = value >= -0.05  # relative to the best route's similarity
    elif base in ("kw_top", "kw_top_log", "length", "english"):
        present = value > mean
    else:
        present = value > 0
    text = present_text if present else absent_text
    if present and not prev and base == "entities" and names["entities"]:
        text += " (" + "、".join(names["entities"][:4]) + ")"
    if present and not prev and base == "persona_named" and names["persona"]:
        text += " (" + "、".join(names["persona"][:3]) + ")"
    return "previous message " + text if prev else text


class Router:
    def __init__(self, model: RouterModel, signals: Signals, embed: Callable[[list[str]], np.ndarray]) -> None:
        self.model = model
        self.signals = signals
        self._embed = embed
        self._mean = np.asarray(model.mean, dtype=np.float64)
        self._scale = np.asarray(model.scale, dtype=np.float64)
        self._coef = np.asarray(model.coef, dtype=np.float64)
        self._intercept = np.asarray(model.intercept, dtype=np.float64)
        self._examples: np.ndarray | None = None
        self._labels = np.asarray([ROUTES.index(e["route"]) for e in model.examples])

    def example_matrix(self) -> np.ndarray:
        if self._examples is None:
            if self.model.examples:
                self._examples = np.asarray(self._embed([e["message"] for e in self.model.examples]), np.float32)
            else:
                self._examples = np.zeros((0, 1), np.float32)
        return self._examples

    def features(
        self, messages: Sequence[dict[str, str]], embedding: np.ndarray | None = None,
        read: tuple[str, dict[str, float], dict[str, list[str]]] | None = None,
    ) -> tuple[dict[str, float], dict[str, list[str]]]:
        """The model's features of the conversation: its text's (`read`: conversation_features' answer, when the
        caller has it) and the similarity to the labelled examples."""
        last, f, names = read or conversation_features(messages, self.signals)
        if any(n.startswith("sim_") for n in self.model.features):
            if embedding is None:
                embedding = self._embed([last])[0]
            f.update(knn_features(np.asarray(embedding, np.float32), self.example_matrix(), self._labels))
        return f, names

    def decide(self, messages: Sequence[dict[str, str]], embedding: np.ndarray | None = None) -> RouteDecision:
        read = conversation_features(messages, self.signals)
        last, f, _ = read
        short = f["has_history"] and f["length"] < math.log1p(8)  # (a go-on after a go-on has no subject of its own)
        if short and _GO_ON.search(last.strip()) and not any(f[k] for k in _OWN_SIGNALS):
            users = [i for i, m in enumerate(messages) if m.get("role") == "user"]
            before = self.decide(messages[: users[-1]])  # the conversation up to the user message before
            return RouteDecision(before.route, before.scores, f"{before.route}: {GO_ON}", features=f)
        f, names = self.features(messages, embedding, read)
        x = (np.asarray([f.get(n, 0.0) for n in self.model.features]) - self._mean) / self._scale
        logits = self._coef @ x + self._intercept
        p = np.exp(logits - logits.max())
        p /= p.sum()
        best = int(np.argmax(p))
        route = ROUTES[best]
        return RouteDecision(
            route=route,
            scores={r: round(float(p[i]), 4) for i, r in enumerate(ROUTES)},
            reason=self._reason(route, best, x, f, names),
            features={k: round(v, 4) for k, v in f.items()},
        )

    def _reason(self, route: str, best: int, x: np.ndarray, f: dict[str, float], names: dict[str, list[str]]) -> str:
        """The few signals that pushed this route above the others the most."""
        others = [i for i in range(len(ROUTES)) if i != best]
        margin = (self._coef[best] - self._coef[others].mean(axis=0)) * x
        parts = []
        for j in np.argsort(-margin)[:3]:
            if margin[j] <= 0.1:
                break
            name = self.model.features[j]
            parts.append(_phrase(name, f.get(name, 0.0), float(self._mean[j]), names))
        return f"{route}: " + ("; ".join(parts) if parts else "no strong signal, closest route")
