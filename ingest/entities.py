"""Named things of a corpus (people, places, organisations), mined at ingest time for the service's router."""

from __future__ import annotations

import logging
import re
from collections import Counter

log = logging.getLogger(__name__)

# jieba's part-of-speech tags for person, transliterated person, place and organisation names
_NAME_TAGS = {"nr", "nrt", "nrfg", "ns", "nt"}
# a speech verb glued to a name by the tagger ("孔明曰") is not a name of its own
_SPEECH_TAIL = re.compile(r"[曰道云言问答笑叹]$")
MAX_ENTITIES = 4000
# what DocRecord.entities_version records; raised when the miner finds other names, so stores mine theirs again
# (1: the names the text introduces, 姓典，名韦; 2: and the kin the text states, kin.mine_kin; 3: and kin after 其,
# daughters, no title for a person)
MINER_VERSION = 3
# a person the text introduces (把关将姓孔，名秀 / 姓典，名韦 / 复姓诸葛，名亮): a name whatever the tagger says
_INTRODUCED = re.compile(r"(?:复|覆)?姓([\u4e00-\u9fff]{1,2})[，,]?名([\u4e00-\u9fff]{1,2})(?=[，。；！,;!])")


def introduced(text: str) -> list[str]:
    """The people `text` introduces by surname and given name, in order: 孔秀 for 把关将姓孔，名秀; 诸葛亮 for
    复姓诸葛，名亮，字孔明."""
    return [m.group(1) + m.group(2) for m in _INTRODUCED.finditer(text)]


def mine_entities(text: str, min_count: int = 3, aliases: list[list[str]] | None = None) -> list[str]:
    """Names that occur at least `min_count` times, most frequent first; then the names the text introduces
    (姓典，名韦 -> 典韦) that it also uses on their own; then every name of `aliases`."""
    from .quiet import load_jieba

    load_jieba()
    import jieba.posseg as pseg

    counts: Counter[str] = Counter()
    for pair in pseg.cut(text):
        word, flag = pair.word, pair.flag
        if flag in _NAME_TAGS and len(word) >= 2 and not _SPEECH_TAIL.search(word):
            counts[word] += 1
    names = [w for w, n in counts.most_common() if n >= min_count][:MAX_ENTITIES]
    seen = set(names)
    for name in introduced(text):
        if name not in seen and name in text:
            names.append(name)
            seen.add(name)
    for group in aliases or []:
        for n in group:
            if n not in seen and len(n) >= 2:
                names.append(n)
                seen.add(n)
    log.debug("mined %d entity names", len(names))
    return names
