"""Build a persona dialogue set from a novel: each line the character says, paired with what prompted it.

How a line is found and paired (chapter by chapter, after ingest's decoding and cleaning):

1. Speech is a top-level “…” introduced by a speaker tag (`孔明笑曰：“`, `玄德问孔明曰：“`); see `speech`.
   The speaker is the subject the tag's clause opens with; a clause with no subject of its own (乃曰,
   翻身问童子曰) takes the subject of the clause before it in the same sentence; 又曰 right after a closing
   quote continues that speaker; 答曰 right after `X问Y曰` is Y.
2. The speaker is the character when that subject opens with the name or an alias (longest first). An
   ambiguous alias (丞相, 军师, 亮; any title or one-character alias) also needs the evidence its
   `aliases.AliasRule` asks for: the right chapters and, nearest in the narration before, a name of the
   character rather than of someone else. `--ambiguous FILE` overrides the table alias by alias.
3. Parts of one speech split by 又曰 / 孔明又曰 with no narration between them are joined.
4. The prompt is the previous speaker's words when someone else spoke just before (at most MAX_GAP
   characters of narration between, no scene change such as 却说 or 次日, no paragraph break unless it is a
   direct reply); otherwise the last sentence or two of narration before the line (from the scene's start
   when a scene begins there). A line with no narration before it is left out and counted.
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from finetune.data.aliases import AliasRule, EvidenceCheck, resolve_rules, rules_as_dict
from finetune.data.formats import Conversation, DataError, Format, write
from finetune.data.speech import ADDRESSEE, VERSE, Utterance, named_alias, utterances
from ingest.fsio import write_text_atomic

log = logging.getLogger(__name__)

MAX_GAP = 40  # narration (chars) allowed between a question and the reply for the question to be the prompt
NARRATION_CHARS = 120  # at most this much narration as a prompt
MIN_PROMPT_CHARS = 4
# A scene change or a lapse of time between a question and a line: the line does not answer the question.
_SCENE_OPENER = re.compile(r"却说|且说|话说|再说|却表")
_SCENE_CHANGE = re.compile(r"却说|且说|话说|再说|却表|次日|数日|是夜|当夜|不一日|时辰|旬日|"
                           r"辞出|拜辞|辞别|告辞|辞了|回到|回至|来到|报与|报知|报入|具言|具说|具述")
# A tag that recites (口吟诗曰) answers no one; a tag that goes on (孔明又曰, 又唤…分付曰) after the character's
# own words and a listener's reaction (维哭拜而受) has no prompt of its own.
_RECITES = re.compile(r"吟|诗曰|歌曰")
_GOES_ON = re.compile(r"又")
SHORT_NARRATION = 16  # a narration prompt under this many characters is a fragment when it follows a scene change


@dataclass
class ExtractReport:
    """What extraction found, for the one-line summary, report.json and tests."""

    character: str
    aliases: list[str]
    novel: str = ""
    encoding: str = ""
    chapters: int = 0
    utterances: int = 0  # every tagged speech in the novel
    lines: int = 0  # the character's, after joining 又曰 continuations
    pairs_per_alias: Counter[str] = field(default_factory=Counter)
    prompts: Counter[str] = field(default_factory=Counter)  # speech | narration
    rejected: Counter[str] = field(default_factory=Counter)  # "alias: reason"
    no_prompt: int = 0
    weak: Counter[str] = field(default_factory=Counter)  # lines left out for a weak prompt, by reason
    rules: dict[str, Any] = field(default_factory=dict)

    @property
    def pairs(self) -> int:
        return sum(self.pairs_per_alias.values())

    def line(self) -> str:
        per_alias = ", ".join(f"{a} {n}" for a, n in self.pairs_per_alias.most_common())
        return (
            f"{self.pairs} pairs for {self.character} ({per_alias or 'none'}) from {self.chapters} chapters; "
            f"prompts: {self.prompts['speech']} speech, {self.prompts['narration']} narration; "
            f"{sum(self.rejected.values())} ambiguous tags rejected, {self.no_prompt} lines without a prompt, "
            f"{sum(self.weak.values())} with a weak one"
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "character": self.character,
            "aliases": self.aliases,
            "novel": self.novel,
            "encoding": self.encoding,
            "chapters": self.chapters,
            "utterances": self.utterances,
            "lines": self.lines,
            "pairs": self.pairs,
            "pairs_per_alias": dict(self.pairs_per_alias.most_common()),
            "prompts": dict(self.prompts),
            "rejected": dict(self.rejected.most_common()),
            "no_prompt": self.no_prompt,
            "weak_prompt": dict(self.weak.most_common()),
            "ambiguous_alias_rules": self.rules,
        }


def _attribute(
    text: str,
    utts: list[Utterance],
    chapter: int | None,
    aliases: list[str],
    checks: dict[str, EvidenceCheck],
    report: ExtractReport,
) -> None:
    """Set `alias` on the utterances the character speaks."""
    quoted = [(u.quote.open, u.quote.end) for u in utts]
    last_accepted: int | None = None
    prev: Utterance | None = None
    for u in utts:
        # the raw tag too: a name may start with an opener (时迁 is not 时 + 迁)
        alias = (
            prev.alias if (u.inherited and prev) else named_alias(u.subject, aliases) or named_alias(u.intro, aliases)
        )
        if alias and alias in checks and not u.inherited:
            reason = checks[alias].check(text, u.start, chapter, quoted, last_accepted)
            if reason:
                report.rejected[f"{alias}: {reason}"] += 1
                log.debug("rejected %s at %s: %s", alias, text[u.start : u.colon], reason)
                alias = None
        u.alias = alias
        if alias:
            last_accepted = u.start
        prev = u


def _join_continuations(utts: list[Utterance]) -> list[Utterance]:
    """A speech cut by 又曰 / 遂取出一图，曰 / 孔明又曰 right after its closing quote is one line: with no
    narration between the parts there is nothing to pair the second part with."""
    out: list[Utterance] = []
    for u in utts:
        prev = out[-1] if out else None
        if prev and prev.end == u.start and (u.inherited or (u.alias and prev.alias)):
            prev.text += u.text
            prev.quote = u.quote  # the joined line ends where the last part ends
            continue
        out.append(u)
    return out


def _narration(text: str, lo: int, hi: int) -> str:
    """The last sentence or two of narration in text[lo:hi], at most NARRATION_CHARS."""
    from ingest.chunking import split_sentences

    span = text[lo:hi]
    kept = ""
    for s, e in reversed(split_sentences(span)):
        piece = span[s:e].strip()
        if kept and len(piece) + len(kept) > NARRATION_CHARS:
            break
        kept = piece + kept
        if len(kept) >= NARRATION_CHARS // 2:
            break
    # a scene that begins inside the window begins the prompt (却说玄德… rather than the last scene's end)
    scenes = [m.start() for m in _SCENE_OPENER.finditer(kept) if m.start() == 0 or kept[m.start() - 1] in "。！？”"]
    if scenes:
        kept = _SCENE_OPENER.sub("", kept[scenes[-1] :], count=1)
    kept = kept.strip().rstrip("，,、：:")
    return kept[-NARRATION_CHARS:]


def _addressed_elsewhere(prev: Utterance, aliases: list[str]) -> bool:
    """The previous speech was said to someone named in its tag (懿暗谓辛毗曰) who is not the character."""
    m = ADDRESSEE.search(prev.intro)
    if m is None:
        return False
    return named_alias(m.group(1), aliases) is None and not any(a in m.group(1) for a in aliases)


def _answers(text: str, prev: Utterance | None, u: Utterance, aliases: list[str]) -> bool:
    """Whether `u` replies to the speech just before it."""
    if prev is None or prev.alias or not prev.text.strip():
        return False
    gap = text[prev.end : u.start]
    return (
        len(gap.strip()) <= MAX_GAP
        and ("\n" not in gap or not gap.strip())  # across a paragraph only as a direct reply
        and not _SCENE_CHANGE.search(gap + u.intro)
        and not _RECITES.search(u.intro)
        and not _addressed_elsewhere(prev, aliases)
        and not VERSE.search(prev.intro)  # 后人有诗赞孔明曰: the narrator's verse, said to no one
    )


def _weak(prompt: str, prev: Utterance | None, u: Utterance, gap: str) -> str | None:
    """Why a narration prompt does not lead to the line, or None: the line goes on from the character's own
    words after a reaction, or the prompt is what is left of a scene change (遂辞出。回至馆驿)."""
    if prev is not None and prev.alias and _GOES_ON.search(u.intro):
        return "goes on from the character's own line"
    if len(prompt) < SHORT_NARRATION and _SCENE_CHANGE.search(gap):
        return "a fragment after a scene change"
    return None


def _pairs(
    text: str, utts: list[Utterance], chapter: int | None, title: str | None, context: bool, report: ExtractReport,
    aliases: list[str],
) -> list[Conversation]:
    convs: list[Conversation] = []
    heading = f"（第{chapter}回 {title or ''}）".replace(" ）", "）") if chapter else ""
    for k, u in enumerate(utts):
        if not u.alias or not u.text.strip():
            continue
        report.lines += 1
        prev = utts[k - 1] if k else None
        meta: dict[str, Any] = {"chapter": chapter, "chapter_title": title, "alias": u.alias, "intro": u.intro}
        if prev and _answers(text, prev, u, aliases):
            prompt = f"{prev.intro}：“{prev.text}”" if context else prev.text
            meta |= {"prompt": "speech", "prompt_intro": prev.intro}
        else:
            prompt = _narration(text, prev.end if prev else 0, u.start)
            if len(prompt) < MIN_PROMPT_CHARS:
                report.no_prompt += 1
                continue
            why = _weak(prompt, prev, u, text[prev.end if prev else 0 : u.start])
            if why:
                report.weak[why] += 1
                continue
            meta["prompt"] = "narration"
        meta["offset"] = u.start
        report.prompts[meta["prompt"]] += 1
        report.pairs_per_alias[u.alias] += 1
        convs.append(Conversation.pair(heading + prompt if context else prompt, u.text.strip(), **meta))
    return convs


def extract_pairs(
    text: str,
    character: str,
    aliases: list[str],
    overrides: dict[str, AliasRule | None] | None = None,
    context: bool = False,
    report: ExtractReport | None = None,
) -> list[Conversation]:
    """Pairs (prompt -> the character's line) from a cleaned novel, chapter by chapter.

    The prompt is the previous speaker's words when someone else spoke just before (at most MAX_GAP
    characters of narration between), else the narration before the line. `context` puts the chapter and
    the previous speaker's tag into the user turn; the same facts are always in `meta`.
    """
    from ingest.chunking import split_sections

    names = list(dict.fromkeys([character, *aliases]))
    rules = resolve_rules(character, names, overrides)
    plain = [a for a in names if a not in rules]
    checks = {alias: EvidenceCheck(rule, plain) for alias, rule in rules.items()}
    report = report if report is not None else ExtractReport(character, aliases)
    report.rules = rules_as_dict(rules)
    convs: list[Conversation] = []
    for section in split_sections(text):
        report.chapters += section.chapter is not None
        utts = utterances(section.text)
        report.utterances += len(utts)
        _attribute(section.text, utts, section.chapter, names, checks, report)
        utts = _join_continuations(utts)
        convs += _pairs(section.text, utts, section.chapter, section.chapter_title, context, report, names)
    return convs


def read_novel(path: Path) -> tuple[str, str]:
    """(cleaned text, encoding) of a novel file in any encoding ingest can detect."""
    from ingest.cleaning import clean_text
    from ingest.encoding import DecodeError, decode_bytes

    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; point --novel at a plain-text novel") from None
    try:
        text, encoding = decode_bytes(raw)
    except DecodeError as exc:
        raise DataError(f"{path}: {exc}") from None
    return clean_text(text), encoding


def _sample_markdown(report: ExtractReport, sample: list[Conversation], seed: int) -> str:
    lines = [
        f"# {report.character}: {len(sample)} random pairs of {report.pairs} (seed {seed})",
        "",
        "Check each: is the reply really the character's, and does the prompt lead to it?",
        "",
    ]
    for i, conv in enumerate(sample, start=1):
        m = conv.meta
        where = f"第{m['chapter']}回 {m.get('chapter_title') or ''}".strip() if m.get("chapter") else "(no chapter)"
        how = f"{m['prompt']}" + (f" ({m['prompt_intro']})" if m.get("prompt_intro") else "")
        lines += [
            f"## {i}. {where} · {m['alias']} · tag {m['intro']} · prompt: {how}",
            "",
            f"**user**: {conv.messages[0]['content']}",
            "",
            f"**{report.character}**: {conv.messages[1]['content']}",
            "",
        ]
    return "\n".join(lines)


def extract_to_dir(
    novel: Path,
    character: str,
    aliases: list[str],
    out: Path,
    overrides: dict[str, AliasRule | None] | None = None,
    sample_size: int = 50,
    seed: int = 0,
    fmt: Format = "openai",
    context: bool = False,
) -> ExtractReport:
    """Extract and write out/pairs.{jsonl|json} (with meta), out/sample.md and out/report.json."""
    text, encoding = read_novel(novel)
    report = ExtractReport(character, aliases, novel=str(novel), encoding=encoding)
    convs = extract_pairs(text, character, aliases, overrides, context, report)
    for conv in convs:
        conv.meta["source"] = novel.name
    out.mkdir(parents=True, exist_ok=True)
    write(out / ("pairs.jsonl" if fmt == "openai" else "pairs.json"), convs, fmt, meta=True)
    rng = random.Random(seed)
    sample = [convs[i] for i in sorted(rng.sample(range(len(convs)), min(sample_size, len(convs))))]
    write_text_atomic(out / "sample.md", _sample_markdown(report, sample, seed))
    write_text_atomic(out / "report.json", json.dumps(report.as_dict(), ensure_ascii=False, indent=2) + "\n")
    log.info("%s", report.line())
    return report
