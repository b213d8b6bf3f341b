"""Generation metrics for Chinese: corpus BLEU (sacrebleu's zh tokenizer), character ROUGE-L, persona style, loops."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

COPY_RUN = 4  # characters: a run this long found in the prompt counts as copied, not said
LOOP_RUN = 4  # characters (a Latin word or number counts as one): a string this long ...
LOOP_TIMES = 3  # ... said this many times (not overlapping) makes the answer a loop
_UNIT = re.compile(r"[A-Za-z0-9]+|\S")  # a Latin word or number, or any other non-space character
_CITATION = re.compile(r"\[\d+\]")  # [1], [2]: a cited answer's markers are no repetition


class CharTokenizer:
    """rouge-score's tokenizer hook: every non-space character is a token (its default drops CJK entirely)."""

    def tokenize(self, text: str) -> list[str]:
        return [c for c in text if not c.isspace()]


def bleu(hypotheses: list[str], references: list[str]) -> float:
    """Corpus BLEU (0-100) with sacrebleu's Chinese tokenization (one token per CJK character)."""
    import sacrebleu

    if not hypotheses:
        return 0.0
    return float(sacrebleu.corpus_bleu(hypotheses, [references], tokenize="zh").score)


def rouge_l(hypotheses: list[str], references: list[str]) -> float:
    """Mean character-level ROUGE-L F1 (0-1) over the pairs."""
    from rouge_score import rouge_scorer

    if not hypotheses:
        return 0.0
    scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer())
    scores = [scorer.score(ref, hyp)["rougeL"].fmeasure for hyp, ref in zip(hypotheses, references, strict=True)]
    return float(sum(scores) / len(scores))


def style_score(texts: list[str], markers: dict[str, list[str]]) -> dict[str, Any]:
    """How much of the persona's register answers use: for each marker category (classical particles,
    self-address, forms of address, ...), the share of texts with at least one of its markers, and markers per
    100 characters; `score` is the mean share over categories (0-1)."""
    out: dict[str, Any] = {"n": len(texts)}
    shares = []
    chars = sum(len(t) for t in texts) or 1
    for name, words in markers.items():
        hits = sum(1 for t in texts if any(w in t for w in words))
        count = sum(t.count(w) for t in texts for w in words)
        share = hits / len(texts) if texts else 0.0
        shares.append(share)
        out[name] = {"share": round(share, 4), "per_100_chars": round(100 * count / chars, 3)}
    out["score"] = round(sum(shares) / len(shares), 4) if shares else 0.0
    return out


def own_words(text: str, sources: Sequence[str], n: int = COPY_RUN) -> str:
    """`text` without the characters it copies from `sources`: every run of `n` or more characters that also
    occurs in one of them is dropped. A model that echoes its system prompt ("你是诸葛亮……蜀汉丞相") has not
    spoken in the persona's register, though the echo is full of its markers."""
    grams = {src[i : i + n] for src in sources for i in range(len(src) - n + 1)}
    keep = [True] * len(text)
    for i in range(len(text) - n + 1):
        if text[i : i + n] in grams:
            keep[i : i + n] = [False] * n
    return "".join(c for c, k in zip(text, keep, strict=True) if k)


def repeated(text: str, n: int = LOOP_RUN, times: int = LOOP_TIMES) -> str | None:
    """The first string of `n` characters that `text` says `times` or more times without overlap (a Latin word or
    number counts as one character, spaces and citation markers [n] are skipped, a string of punctuation alone does
    not count), or None.
    A longer repeated string always has such a prefix, so this finds any repeat of `n` or more characters:
    `repeated("以争刘璋为首，以争刘璋为首，以争刘璋为首")` is "以争刘璋"."""
    units = _UNIT.findall(_CITATION.sub("", text))
    last: dict[tuple[str, ...], int] = {}  # n-gram -> start of its last counted occurrence
    count: dict[tuple[str, ...], int] = {}
    for i in range(len(units) - n + 1):
        gram = tuple(units[i : i + n])
        if not any(u.isalnum() for u in gram):
            continue
        if gram in last and i - last[gram] < n:  # overlaps the occurrence counted last ("哈哈哈哈哈")
            continue
        last[gram] = i
        count[gram] = count.get(gram, 0) + 1
        if count[gram] >= times:
            return "".join(_join(gram))
    return None


def _join(units: tuple[str, ...]) -> list[str]:
    """Units back to text: a space between two Latin words, nothing between other characters."""
    out: list[str] = []
    for u in units:
        if out and u[0].isascii() and u[0].isalnum() and out[-1][-1].isascii() and out[-1][-1].isalnum():
            out.append(" ")
        out.append(u)
    return out


def loop_rate(texts: Sequence[str], n: int = LOOP_RUN, times: int = LOOP_TIMES) -> float:
    """Share of `texts` (0-1) that repeat a string of `n`+ characters `times`+ times (see `repeated`)."""
    if not texts:
        return 0.0
    return sum(1 for t in texts if repeated(t, n, times) is not None) / len(texts)


def generation_metrics(
    hypotheses: list[str],
    references: list[str],
    markers: dict[str, list[str]],
    prompts: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """BLEU, ROUGE-L, length, loop rate (`loop_rate`) and the persona style score. With `prompts` (the texts each
    answer was prompted with), `style` scores only the answer's own words (see `own_words`) and `style_raw` the
    whole answers."""
    own = [own_words(h, p) for h, p in zip(hypotheses, prompts, strict=True)] if prompts is not None else hypotheses
    out = {
        "bleu": round(bleu(hypotheses, references), 3),
        "rouge_l": round(rouge_l(hypotheses, references), 4),
        "style": style_score(own, markers),
        "mean_chars": round(sum(len(h) for h in hypotheses) / max(len(hypotheses), 1), 1),
        "loop_rate": round(loop_rate(hypotheses), 4),
    }
    if prompts is not None:
        out["style_raw"] = style_score(hypotheses, markers)
        out["copied_share"] = round(1 - sum(map(len, own)) / max(sum(map(len, hypotheses)), 1), 4)
    return out
