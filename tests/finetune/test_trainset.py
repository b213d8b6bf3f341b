"""Training examples: loss only on assistant tokens (same ids as serving), packing, batches, masks."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune.models.template import GEMMA_CHAT_TEMPLATE, encode_chat, encode_chat_labels, end_of_turn_ids
from finetune.training.config import load_config
from finetune.training.trainset import IGNORE, Example, collate, epoch_batches, load_conversations, pack, tokenize

CONV = [
    {"role": "system", "content": "你是诸葛亮。"},
    {"role": "user", "content": "先生何以知今日大雾？"},
    {"role": "assistant", "content": "亮于三日前已算定。"},
    {"role": "user", "content": "如之奈何？"},
    {"role": "assistant", "content": "主公勿忧。"},
]


@pytest.fixture(scope="module")
def tokenizer(tiny_model: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_model)


def _labelled_text(tokenizer, ids: list[int], labels: list[int]) -> list[str]:
    """The decoded runs of consecutive labelled tokens."""
    runs: list[str] = []
    current: list[int] = []
    for i, lab in zip(ids, labels, strict=True):
        if lab == IGNORE:
            if current:
                runs.append(tokenizer.decode(current))
            current = []
        else:
            assert lab == i
            current.append(i)
    if current:
        runs.append(tokenizer.decode(current))
    return runs


def test_labels_cover_exactly_the_assistant_turns(tokenizer):
    ids, labels = encode_chat_labels(tokenizer, CONV)
    assert ids == encode_chat(tokenizer, CONV, add_generation_prompt=False)  # what the service renders
    runs = _labelled_text(tokenizer, ids, labels)
    assert runs == ["亮于三日前已算定。<|im_end|>\n", "主公勿忧。<|im_end|>\n"]
    # the prompt the service sends for the first answer is exactly the unlabelled prefix
    prompt = encode_chat(tokenizer, CONV[:2])
    assert ids[: len(prompt)] == prompt
    assert all(lab == IGNORE for lab in labels[: len(prompt)])
    assert labels[len(prompt)] != IGNORE


def test_labels_with_the_gemma_turn_template(tokenizer):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tokenizer.name_or_path)
    tok.chat_template = GEMMA_CHAT_TEMPLATE
    ids, labels = encode_chat_labels(tok, CONV)
    runs = _labelled_text(tok, ids, labels)
    assert [r.replace(" ", "") for r in runs] == ["亮于三日前已算定。<end_of_turn>\n", "主公勿忧。<end_of_turn>\n"]
    assert "你是诸葛亮。\n\n先生" in tok.decode(ids)  # gemma folds the system prompt into the first user turn


def test_stop_tokens_come_from_the_template(tokenizer):
    assert end_of_turn_ids(tokenizer) == [tokenizer.convert_tokens_to_ids("<|im_end|>")]


def test_tokenize_cuts_long_examples_and_drops_answerless_ones(tokenizer, caplog):
    from finetune.data.formats import Conversation

    long_answer = Conversation.pair("问", "答" * 200)
    long_prompt = Conversation.pair("问" * 200, "答")
    examples = tokenize(tokenizer, [long_answer, long_prompt, Conversation.pair("问", "答")], max_len=32)
    assert len(examples) == 2 and all(len(e) <= 32 for e in examples)
    assert "1 dropped" in caplog.text


def test_packing_fills_rows_without_losing_examples():
    examples = [Example(list(range(n)), [IGNORE, *range(1, n)]) for n in (30, 20, 50, 10, 40, 60, 5, 35)]
    rows = pack(examples, 64)
    assert all(sum(len(e) for e in row) <= 64 for row in rows)
    assert sorted(len(e) for row in rows for e in row) == sorted(len(e) for e in examples)
    assert len(rows) == 5  # 250 tokens in 64-token rows: first-fit-decreasing needs 5 (the minimum is 4)


def test_epoch_order_is_a_function_of_seed_and_epoch():
    rows = [[Example([1] * n, [1] * n)] for n in range(1, 41)]
    a = epoch_batches(rows, 4, "length", seed=1, epoch=0)
    assert a == epoch_batches(rows, 4, "length", seed=1, epoch=0)
    assert a != epoch_batches(rows, 4, "length", seed=1, epoch=1)
    assert sorted(len(r[0]) for b in a for r in b) == list(range(1, 41))
    assert len(epoch_batches(rows, 4, "none", seed=1, epoch=0)) == 10


def test_collate_restarts_positions_in_packed_rows():
    a, b = Example([5, 6, 7], [IGNORE, 6, 7]), Example([8, 9], [IGNORE, 9])
    packed = collate([[a, b], [b]], pad_id=0, packed=True)
    assert packed["attention_mask"] is None and packed["tokens"] == 7
    assert packed["position_ids"].tolist() == [[0, 1, 2, 0, 1], [0, 1, 0, 1, 2]]
    assert packed["labels"].tolist() == [[IGNORE, 6, 7, IGNORE, 9], [IGNORE, 9, IGNORE, IGNORE, IGNORE]]
    padded = collate([[a], [b]], pad_id=0, packed=False)
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    assert padded["input_ids"].tolist() == [[5, 6, 7], [8, 9, 0]]


def test_packed_loss_equals_unpacked_loss(tiny_model: Path, tokenizer, chat_file: Path):
    """Examples packed into one row must not attend to each other: the loss is the same as one at a time."""
    import torch
    from transformers import AutoModelForCausalLM

    from finetune.training.steps import mean_loss

    cfg = load_config(None, [f"data.train={chat_file}", "data.dedupe=false", "train.max_seq_len=128"])
    train, _ = load_conversations(cfg)
    examples = tokenize(tokenizer, train, 128)
    model = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    device = torch.device("cpu")
    cfg.train.batching = "packing"
    packed = mean_loss(model, examples, cfg.train, device, False, tokenizer.pad_token_id)
    cfg.train.batching, cfg.train.batch_size = "none", 1
    single = mean_loss(model, examples, cfg.train, device, False, tokenizer.pad_token_id)
    cfg.train.batching, cfg.train.batch_size = "length", 5
    padded = mean_loss(model, examples, cfg.train, device, False, tokenizer.pad_token_id)
    assert packed == pytest.approx(single, rel=1e-5) and padded == pytest.approx(single, rel=1e-5)


def test_mixing_general_data_at_a_ratio(tmp_path: Path, chat_file: Path):
    from .conftest import write_pairs

    general = write_pairs(tmp_path / "general.jsonl", repeat=10)
    cfg = load_config(
        None,
        [f"data.train={chat_file}", "data.dedupe=false", "data.val_split=0", f"data.mix_path={general}",
         "data.mix_ratio=0.2"],
    )  # fmt: skip
    train, val = load_conversations(cfg)
    assert val == []
    assert sum(c.meta["mix"] == "extra" for c in train) == 6 and len(train) == 30  # 24 persona : 6 general


def _messages_file(path: Path, rows: list[tuple[str, str]], system: str | None = None) -> Path:
    import json

    head = [{"role": "system", "content": system}] if system else []
    path.write_text("".join(json.dumps({"messages": [*head, {"role": "user", "content": q},
                    {"role": "assistant", "content": a}]}, ensure_ascii=False) + "\n" for q, a in rows),
                    encoding="utf-8")  # fmt: skip
    return path


def test_classify_from_messages_whose_answer_is_the_label(tmp_path: Path):
    rows = [(f"评论：好吃{i}", "好评") for i in range(10)] + [(f"评论：太慢{i}", "差评") for i in range(10)]
    data = _messages_file(tmp_path / "reviews.jsonl", rows, "你是一位外卖评论好评差评评论专家。")
    cfg = load_config(None, ["task=classify", f"data.train={data}", "data.val_split=0.3", "data.split_seed=100"])
    train, val = load_conversations(cfg)
    assert len(train) == 14 and len(val) == 6
    conv = train[0]
    assert conv.system == "你是一位外卖评论好评差评评论专家。"  # the record's own prompts, not data.prompt
    assert conv.messages[0]["content"].startswith("评论：") and "只回答" not in conv.messages[0]["content"]
    assert conv.messages[-1]["content"] in ("好评", "差评") and cfg.data.labels == ["差评", "好评"]


def test_classify_from_alpaca_finds_the_labels(tmp_path: Path):
    import json

    records = [{"instruction": "这条评论的情感？", "input": f"文本{i}", "output": "pos" if i % 2 else "neg"}
               for i in range(12)]  # fmt: skip
    data = tmp_path / "a.json"
    data.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")
    cfg = load_config(None, ["task=classify", f"data.train={data}"])
    train, val = load_conversations(cfg)
    assert cfg.data.labels == ["neg", "pos"]  # the defaults (差评/好评) do not name them: the data's labels
    assert {c.messages[-1]["content"] for c in train + val} == {"neg", "pos"}
    assert train[0].messages[0]["content"].startswith("这条评论的情感？")


def test_classify_refuses_chat_data_and_single_label_data(tmp_path: Path):
    from finetune.data.formats import DataError

    chat = _messages_file(tmp_path / "chat.jsonl", [(f"问{i}", f"答{i}") for i in range(30)])
    with pytest.raises(DataError, match=r"30 different values.*task=chat"):
        load_conversations(load_config(None, ["task=classify", f"data.train={chat}"]))
    one = _messages_file(tmp_path / "one.jsonl", [(f"好吃{i}", "好评") for i in range(10)])
    with pytest.raises(DataError, match="every answer is '好评'"):
        load_conversations(load_config(None, ["task=classify", f"data.train={one}"]))
