"""Fixtures for the finetune tests: a small novel in the style of 三国演义 with the cases extraction must get right."""

from __future__ import annotations

from pathlib import Path

import pytest

# Written for these tests. Each paragraph is a case: nested quotes, speech over several sentences and over two
# paragraphs, 又曰 continuations, a subject-less tag (乃曰), an answer (答曰) by the one asked, 丞相 meaning
# 曹操 (chapter 46) and 孔明 (chapter 91), 亮 meaning 吴主孙亮 (chapter 113).
NOVEL = """\
第三十八回 定三分隆中决策
　　玄德三顾草庐，童子引入，孔明方出相见。
　　玄德曰：“备久慕先生大名，今日得见，实为万幸。敢问先生，当今天下大势若何？”孔明曰：“自董卓造逆以来，天下豪杰并起。曹操势不及袁绍，而竟能克绍者，非惟天时，抑亦人谋也。将军欲成霸业，可先取荆州为家，后取西川建基业！”玄德闻言，避席拱手谢曰：“先生之言，顿开茅塞。”
　　孔明见其意甚诚，乃曰：“家兄尝言：‘良禽相木而栖，贤臣择主而事。’亮愿效犬马之劳。”
　　玄德大喜，遂同归新野。

第四十六回 用奇谋孔明借箭
　　却说曹操在寨中，闻报江上擂鼓，急召众将商议。丞相曰：“重雾迷江，彼军忽至，必有埋伏，切不可轻动。”
　　却说孔明令船队急回，二十只船两边束草上排满箭枝。孔明回船谓鲁肃曰：“每船上箭约五六千矣。不费江东半分之力，已得十万余箭。”肃曰：“先生真神人也！何以知今日如此大雾？”孔明笑曰：“为将而不通天文，是庸才也。”又曰：“亮于三日前已算定今日有大雾，因此敢任三日之限。”

第九十一回 祭泸水汉相班师
　　孔明升帐，聚众将听令，众将皆至帐下。丞相曰：“吾今北伐，汝等各宜用心。”
　　魏延问孔明曰：“丞相何以不从子午谷出兵？”答曰：“此危计也，不可用。”
　　孔明传令已毕，众将分头而去。孔明独坐帐中，谓姜维曰：“第一件事，须先安民。
　　“第二件事，须整顿军马。”

第一百一十三回 丁奉定计斩孙綝
　　吴主孙亮闷坐宫中，黄门侍郎全纪在侧。亮因泣告曰：“孙綝专权，欺朕太甚。”纪曰：“陛下但有用臣处，臣万死不辞。”
"""


@pytest.fixture
def small_novel(tmp_path: Path) -> Path:
    p = tmp_path / "xiao_sanguo.txt"
    p.write_text(NOVEL, encoding="utf-8")
    return p


# Training fixtures: a tiny random chat model and a memorisation set, built once per session.
PAIRS = [
    ("先生何以知今日大雾？", "亮于三日前已算定今日有大雾。"),
    ("曹兵势大，如之奈何？", "主公勿忧，亮自有妙计。"),
    ("将军欲成霸业，当如何？", "可先取荆州为家，后取西川建基业。"),
    ("丞相何不从子午谷出兵？", "此危计也，不可用。"),
    ("今日天气如何？", "今天天气很好，我们去公园散步吧。"),
    ("外卖怎么样？", "外卖送得很快，味道也不错。"),
]


def write_pairs(path: Path, repeat: int = 4) -> Path:
    import json

    lines = [
        json.dumps(
            {"messages": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}, ensure_ascii=False
        )
        for _ in range(repeat)
        for q, a in PAIRS
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from .tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture
def chat_file(tmp_path: Path) -> Path:
    return write_pairs(tmp_path / "pairs.jsonl")


def tiny_overrides(model: Path, data: Path, out: Path, *extra: str) -> list[str]:
    """key=value overrides for a fast run of the tiny model; `extra` wins."""
    return [
        f"model={model}",
        f"data.train={data}",
        "data.dedupe=false",
        "data.val_split=0.2",
        f"output_dir={out}",
        "train.max_steps=12",
        "train.lr=1e-2",
        "train.batch_size=4",
        "train.max_seq_len=96",
        "train.eval_every=4",
        "train.save_every=4",
        "train.warmup_ratio=0",
        "lora.r=16",
        "lora.alpha=32",
        "lora.dropout=0",
        "eval.max_samples=4",
        "eval.max_new_tokens=12",
        *extra,
    ]
