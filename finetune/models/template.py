"""The chat template: the templates themselves and the one function that renders conversations into model input.

The one home of the template used at training and serving: the ChatML default, Gemma's turn format (given to the
offline gemma-3-270m when it is converted), the stop tokens that end a turn. Training (`finetune train`), merging
(the template is saved with the model, where vLLM reads it) and the service's in-process engine all go through
`ensure_chat_template` and `encode_chat`, so the same messages become the same prompt tokens everywhere.
"""

from __future__ import annotations

from typing import Any

# ChatML, for tokenizers that bring no template of their own (tiny test models, most base models).
DEFAULT_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
DEFAULT_END_OF_TURN = "<|im_end|>"

# Gemma's published turn format. The GGUF carries no chat template, but gemma's vocabulary has
# <start_of_turn>/<end_of_turn> as single special tokens, so this template costs one token per marker and
# <end_of_turn> can be the stop token (ChatML's <|im_end|> would be six ordinary tokens there).
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if messages[0]['role'] == 'system' %}"
    "{% set first_user_prefix = messages[0]['content'] + '\n\n' %}{% set loop_messages = messages[1:] %}"
    "{% else %}{% set first_user_prefix = '' %}{% set loop_messages = messages %}{% endif %}"
    "{% for message in loop_messages %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}{{ '<end_of_turn>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<start_of_turn>model\n' }}{% endif %}"
)
GEMMA_END_OF_TURN = "<end_of_turn>"


def ensure_chat_template(tokenizer: Any, template: str | None = None) -> Any:
    """Give `tokenizer` a chat template: `template` if given, its own if it has one, ChatML otherwise."""
    if template:
        tokenizer.chat_template = template
    elif not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = DEFAULT_CHAT_TEMPLATE
    return tokenizer


NAMED_TEMPLATES = {"chatml": DEFAULT_CHAT_TEMPLATE, "gemma": GEMMA_CHAT_TEMPLATE}


def choose_template(tokenizer: Any, choice: str | None) -> str | None:
    """Give a tokenizer with no chat template the one a config chooses: `chatml`, `gemma`, Jinja text, or a path
    to a .jinja file. A tokenizer's own template is kept (the model was pre-trained on it). Returns what was
    set, or None."""
    from pathlib import Path

    if not choice or getattr(tokenizer, "chat_template", None):
        return None
    if choice in NAMED_TEMPLATES:
        template = NAMED_TEMPLATES[choice]
    elif "{%" in choice or "{{" in choice:
        template = choice
    elif Path(choice).is_file():
        template = Path(choice).read_text(encoding="utf-8")
    else:
        raise ValueError(f"chat_template: {choice!r} is none of {', '.join(NAMED_TEMPLATES)}, a Jinja template "
                         "or a .jinja file")  # fmt: skip
    tokenizer.chat_template = template
    return template


def render_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
    """The prompt text for `messages` (what vLLM renders for /v1/chat/completions with the same template)."""
    ensure_chat_template(tokenizer)
    return str(tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))


def encode_chat(tokenizer: Any, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> list[int]:
    """Prompt token ids. Special tokens come from the template only, as in vLLM's chat path."""
    text = render_chat(tokenizer, messages, add_generation_prompt)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_chat_labels(
    tokenizer: Any, messages: list[dict[str, str]], ignore_index: int = -100
) -> tuple[list[int], list[int]]:
    """(input_ids, labels) for training: the ids are `encode_chat(messages, add_generation_prompt=False)`;
    labels copy the ids on the assistant's turns (their text and end-of-turn marker) and are `ignore_index`
    elsewhere, so the loss falls on what the model must say and not on the prompt.

    Each assistant turn's span is the text its rendering adds after the generation prompt that precedes it,
    which holds for any template whose rendering of a conversation prefix is a prefix of the whole.
    """
    text = render_chat(tokenizer, messages, add_generation_prompt=False)
    spans: list[tuple[int, int]] = []
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = render_chat(tokenizer, messages[:i], add_generation_prompt=True)
        upto = render_chat(tokenizer, messages[: i + 1], add_generation_prompt=False)
        if not text.startswith(upto) or not upto.startswith(before):
            raise ValueError("the chat template does not render conversation prefixes as prefixes of the whole")
        spans.append((len(before), len(upto)))
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    labels = [ignore_index] * len(ids)
    for j, (start, end) in enumerate(enc["offset_mapping"]):
        if any(start < hi and end > lo for lo, hi in spans):
            labels[j] = ids[j]
    return ids, labels


# End-of-turn markers of common templates; one counts when the tokenizer's template writes it and it is one token.
END_OF_TURN_MARKERS = (DEFAULT_END_OF_TURN, GEMMA_END_OF_TURN, "<|eot_id|>", "<|end|>", "<|endoftext|>")


def end_of_turn_ids(tokenizer: Any) -> list[int]:
    """Token ids that end the assistant's turn under the tokenizer's chat template, plus its EOS: the stop tokens
    for generation (written into a merged model's generation_config.json, where vLLM reads them too)."""
    ensure_chat_template(tokenizer)
    template = str(tokenizer.chat_template)
    ids: list[int] = []
    for marker in END_OF_TURN_MARKERS:
        if marker in template:
            found = tokenizer(marker, add_special_tokens=False)["input_ids"]
            if len(found) == 1:
                ids.append(int(found[0]))
    if tokenizer.eos_token_id is not None:
        ids.append(int(tokenizer.eos_token_id))
    return list(dict.fromkeys(ids))


def apply_gemma_template(tokenizer: Any) -> list[int]:
    """Give a gemma tokenizer loaded from its GGUF a chat template: its own if the GGUF brings one, else Gemma's
    turn format when the vocabulary has the turn tokens (ChatML otherwise). Returns the stop token ids."""
    end_id = tokenizer.convert_tokens_to_ids(GEMMA_END_OF_TURN)
    has_turn_tokens = isinstance(end_id, int) and end_id != tokenizer.unk_token_id
    own = getattr(tokenizer, "chat_template", None)
    ensure_chat_template(tokenizer, own or (GEMMA_CHAT_TEMPLATE if has_turn_tokens else None))
    return [tokenizer.eos_token_id] + ([end_id] if has_turn_tokens else [])
