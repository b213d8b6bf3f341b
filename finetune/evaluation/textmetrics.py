"""Generation metrics for Chinese: corpus BLEU (sacrebleu's zh tokenizer), character ROUGE-L, persona style."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

COPY_RUN = 4  # characters: a run this long found in the prompt counts as copied, not said


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


def generation_metrics(
    hypotheses: list[str],
    references: list[str],
    markers: dict[str, list[str]],
    prompts: Sequence[Sequence[str]] | None = None,
) -> dict[str, Any]:
    """BLEU, ROUGE-L, length and the persona style score. With `prompts` (the texts each answer was prompted
    with), `style` scores only the answer's own words (see `own_words`) and `style_raw` the whole answers."""
    own = [own_words(h, p) for h, p in zip(hypotheses, prompts, strict=True)] if prompts is not None else hypotheses
    out = {
        "bleu": round(bleu(hypotheses, references), 3),
        "rouge_l": round(rouge_l(hypotheses, references), 4),
        "style": style_score(own, markers),
        "mean_chars": round(sum(len(h) for h in hypotheses) / max(len(hypotheses), 1), 1),
    }
    if prompts is not None:
        out["style_raw"] = style_score(hypotheses, markers)
        out["copied_share"] = round(1 - sum(map(len, own)) / max(sum(map(len, hypotheses)), 1), 4)
    return out
