"""A tiny random Qwen2 chat model with a BPE tokenizer trained here on a few kB of Chinese, for fast tests."""

from __future__ import annotations

from pathlib import Path

# Lines in the register the persona tests look for, plus plain modern Chinese, so the BPE sees both.
CORPUS = (
    """\
亮于三日前已算定今日有大雾，因此敢任三日之限。
为将而不通天文，不识地利，不知奇门，不晓阴阳，不看阵图，不明兵势，是庸才也。
主公勿忧，亮自有妙计。将军可引兵埋伏于山谷之中。
吾观曹操虽有百万之众，然其心不一，可破也。
臣本布衣，躬耕于南阳，苟全性命于乱世，不求闻达于诸侯。
今天天气很好，我们去公园散步吧。外卖送得很快，味道也不错。
菜都凉了，送餐太慢，再也不点这家了。量很足，好吃，下次还来。
你好，请问有什么可以帮你的吗？谢谢你的帮助。
皇上万福金安。本宫到任何时候都不会自轻自贱。
"""
    * 8
)


def build_tokenizer(directory: Path) -> None:
    from tests.tinymodel import build_tokenizer as build

    build(directory, vocab_size=600, corpus=CORPUS)


def build_tiny_model(directory: Path, hidden: int = 64, layers: int = 2, seed: int = 0, init: float = 0.2) -> Path:
    """Write a tokenizer and a random 2-layer Qwen2 (head_dim 16) into `directory`; returns it.

    The weights are drawn wider than the usual 0.02 so that the tied embeddings, which LoRA does not train, can
    still express confident predictions: with 0.02 a LoRA cannot push the loss far below ln(vocab)."""
    import torch
    from transformers import AutoTokenizer, Qwen2Config, Qwen2ForCausalLM

    directory.mkdir(parents=True, exist_ok=True)
    build_tokenizer(directory)
    tokenizer = AutoTokenizer.from_pretrained(directory)
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=hidden * 2,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        tie_word_embeddings=True,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        initializer_range=init,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    return directory
