"""Tiny random chat models for engine tests: a Qwen2 vLLM can load (head_dim 64) and a tokenizer trained here."""

from __future__ import annotations

from pathlib import Path

from finetune.models.template import DEFAULT_CHAT_TEMPLATE, DEFAULT_END_OF_TURN

SPECIALS = ["<|endoftext|>", "<|im_start|>", DEFAULT_END_OF_TURN]

# A few kB of Chinese (classical and modern), enough for a BPE of ~1k tokens that covers the test prompts.
CORPUS = (
    """\
话说天下大势，分久必合，合久必分。周末七国分争，并入于秦。及秦灭之后，楚、汉分争，又并入于汉。
却说南阳卧龙岗有一高士，覆姓诸葛，名亮，字孔明，躬耕于陇亩之中，好为梁父吟。
玄德闻孔明之名，与云长、翼德同往隆中拜访。第一次不遇，第二次又值风雪，孔明出游未归。
孔明曰：将军欲成霸业，北让曹操占天时，南让孙权占地利，将军可占人和。先取荆州为家，后取西川建基业。
周瑜忌孔明之才，欲以十日造十万支箭为难之。孔明曰：只须三日，便可交付。
是夜大雾漫天，孔明令船只一字摆开，擂鼓呐喊。曹军疑有埋伏，只令弓弩手乱箭射之。
亮于三日前已算定今日有大雾，因此敢任三日之限。为将而不通天文，不识地利，是庸才也。
臣本布衣，躬耕于南阳，苟全性命于乱世，不求闻达于诸侯。先帝不以臣卑鄙，猥自枉屈，三顾臣于草庐之中。
你好，请问有什么可以帮你的吗？谢谢你的帮助。今天天气很好，我们去公园散步吧。
请用一句话介绍一下诸葛亮。他是三国时期蜀汉的丞相，以智谋著称。草船借箭的故事发生在赤壁之战前。
你是一个乐于助人的助手。请简要回答用户的问题。我不知道，请换一个问题。
Hello, how are you? I am fine, thank you. The quick brown fox jumps over the lazy dog.
"""
    * 6
)


def build_tokenizer(directory: Path, vocab_size: int = 1000, corpus: str = CORPUS) -> None:
    """Train a byte-level BPE on `corpus` and save it with ChatML specials (eos = <|im_end|>) and the default
    template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus.splitlines(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=DEFAULT_END_OF_TURN,
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
    )
    fast.chat_template = DEFAULT_CHAT_TEMPLATE
    fast.save_pretrained(directory)


def build_tiny_model(
    directory: Path,
    *,
    hidden: int = 128,
    layers: int = 2,
    heads: int = 2,
    max_positions: int = 512,
    seed: int = 0,
    init: float = 0.2,
) -> Path:
    """Write a tokenizer and a random Qwen2 (head_dim = hidden / heads = 64 by default) into `directory`.

    The output head is untied, and its rows for special tokens and for tokens that are not valid UTF-8 on their
    own are zeroed: their logit is then 0 while the best of the other ~1k random logits is positive, so greedy
    decoding never ends early and always produces printable text. That keeps stream/non-stream and
    transformers/vLLM comparisons about numerics, not about replacement characters. Weights are drawn wider than
    the usual 0.02 so greedy choices are decisive (few near-ties between float32 implementations)."""
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
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        initializer_range=init,
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    with torch.no_grad():
        for token_id in range(len(tokenizer)):
            text = tokenizer.decode([token_id])
            if token_id in tokenizer.all_special_ids or "\ufffd" in text or not text:
                model.lm_head.weight[token_id].zero_()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(directory)
    return directory


def build_random_lora(model_dir: Path, out_dir: Path, *, rank: int = 8, seed: int = 1) -> Path:
    """Save a LoRA adapter with random (non-zero) A and B for the model in `model_dir`, so it changes outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=["q_proj", "v_proj"], init_lora_weights=False, task_type="CAUSAL_LM"
    )
    torch.manual_seed(seed)
    peft_model = get_peft_model(base, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.5)
    peft_model.save_pretrained(str(out_dir))
    return out_dir
