"""Which aliases of a character are shared with other people, and the evidence each needs to count."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from finetune.data.formats import DataError

# Titles and forms of address that name whoever holds them at the time.
TITLES = frozenset(
    "丞相 军师 先生 将军 主公 都督 大都督 太守 陛下 天子 皇叔 相国 司徒 太尉 元帅 大王 主上 吾主 明公 使君 刺史".split()
)


@dataclass(frozen=True)
class AliasRule:
    """An ambiguous alias counts as the character only inside `chapters` (inclusive; None: any) and when,
    looking back at most `window` characters of narration from the speaker tag, the nearest mention of any
    `evidence` or `against` name is evidence. The character's name, its unambiguous aliases and an accepted
    line of the character within the window are always evidence. Names inside quotes are not mentions: a
    speech about 孔明 does not put him in the room."""

    chapters: tuple[int, int] | None = None
    evidence: tuple[str, ...] = ()
    against: tuple[str, ...] = ()
    window: int = 500


# Known cases, per character: 三国演义 calls 曹操 丞相 until he dies (ch. 78); 孔明 is made 丞相 in ch. 80 and
# dies in ch. 104, after which 丞相 is 蒋琬, 司马懿 or 孙綝. 军师 is 徐庶 (ch. 35-36) and 庞统 (副军师, ch. 57-63)
# as well as 孔明 (from ch. 38). 亮 is also 吴主孙亮 (ch. 108-113) and part of any word with 亮 in it.
KNOWN: dict[str, dict[str, AliasRule]] = {
    "诸葛亮": {
        "丞相": AliasRule(
            chapters=(80, 104),
            evidence=("武侯", "诸葛丞相"),
            against=("曹操", "曹丞相", "司马懿", "蒋琬", "孙綝", "顾雍", "陆逊", "曹丕", "华歆", "王朗"),
            window=300,
        ),
        "军师": AliasRule(
            chapters=(38, 104),
            against=("徐庶", "单福", "元直", "庞统", "士元", "凤雏", "郭嘉", "荀攸", "贾诩"),
            window=300,
        ),
        "亮": AliasRule(evidence=("诸葛",), against=("孙亮", "吴主", "孙綝", "孙峻"), window=200),
    },
}


def default_rules(character: str, aliases: list[str]) -> dict[str, AliasRule]:
    """Rules for the aliases that need one: the known table for this character, else any title or
    one-character alias gets an evidence-only rule."""
    known = KNOWN.get(character, {})
    rules: dict[str, AliasRule] = {}
    for alias in aliases:
        if alias in known:
            rules[alias] = known[alias]
        elif alias != character and (alias in TITLES or len(alias) == 1):
            rules[alias] = AliasRule()
    return rules


def load_overrides(path: Path) -> dict[str, AliasRule | None]:
    """Read an alias table: a JSON object of alias -> rule fields, or null to treat the alias as unambiguous.

    {"丞相": {"chapters": [80, 104], "evidence": ["武侯"], "against": ["曹操"], "window": 300}, "亮": null}
    """
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such alias table") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a JSON alias table ({exc})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: an alias table is a JSON object of alias -> rule (or null)")
    out: dict[str, AliasRule | None] = {}
    for alias, spec in raw.items():
        out[alias] = None if spec is None else _rule(spec, f"{path}: {alias!r}")
    return out


def _rule(spec: Any, where: str) -> AliasRule:
    if not isinstance(spec, dict):
        raise DataError(f"{where}: a rule is an object with chapters, evidence, against, window")
    unknown = set(spec) - {"chapters", "evidence", "against", "window"}
    if unknown:
        raise DataError(f"{where}: unknown keys {sorted(unknown)} (use chapters, evidence, against, window)")
    chapters = spec.get("chapters")
    if chapters is not None and not (
        isinstance(chapters, list) and len(chapters) == 2 and all(isinstance(c, int) for c in chapters)
    ):
        raise DataError(f"{where}: 'chapters' must be [first, last], e.g. [80, 104]")
    names = {}
    for key in ("evidence", "against"):
        value = spec.get(key, [])
        if not (isinstance(value, list) and all(isinstance(v, str) and v for v in value)):
            raise DataError(f"{where}: {key!r} must be a list of names")
        names[key] = tuple(value)
    window = spec.get("window", 500)
    if not isinstance(window, int) or window <= 0:
        raise DataError(f"{where}: 'window' must be a positive number of characters")
    return AliasRule(tuple(chapters) if chapters else None, names["evidence"], names["against"], window)


def resolve_rules(
    character: str, aliases: list[str], overrides: dict[str, AliasRule | None] | None = None
) -> dict[str, AliasRule]:
    rules = default_rules(character, aliases)
    for alias, rule in (overrides or {}).items():
        if alias not in aliases:
            continue
        if rule is None:
            rules.pop(alias, None)
        else:
            rules[alias] = rule
    return rules


def rules_as_dict(rules: dict[str, AliasRule]) -> dict[str, Any]:
    """The rules in the form `load_overrides` reads, for the run's report."""
    return {a: {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(r).items()} for a, r in rules.items()}


class EvidenceCheck:
    """Decides, for one ambiguous alias, whether a speaker tag at a position refers to the character."""

    def __init__(self, rule: AliasRule, evidence: list[str]) -> None:
        self.rule = rule
        terms = [*evidence, *rule.evidence]
        self._evidence = set(terms)
        names = sorted({*terms, *rule.against}, key=len, reverse=True)
        self._names = re.compile("|".join(map(re.escape, names))) if names else None

    def check(
        self, text: str, pos: int, chapter: int | None, quoted: list[tuple[int, int]], last_accepted: int | None
    ) -> str | None:
        """None when the alias at `pos` is the character, else the reason it is not."""
        rule = self.rule
        if rule.chapters and (chapter is None or not rule.chapters[0] <= chapter <= rule.chapters[1]):
            return f"outside chapters {rule.chapters[0]}-{rule.chapters[1]}"
        lo = max(0, pos - rule.window)
        nearest: tuple[int, str] | None = None
        if self._names:
            for m in self._names.finditer(text, lo, pos):
                if not any(a <= m.start() < b for a, b in quoted):
                    nearest = (m.start(), m.group(0))
        if last_accepted is not None and last_accepted >= lo and (nearest is None or last_accepted > nearest[0]):
            return None
        if nearest is None:
            return "no evidence nearby"
        return None if nearest[1] in self._evidence else f"nearer to {nearest[1]}"
