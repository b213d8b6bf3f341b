"""Try a tuned model from the shell: load a run, checkpoint, exported adapter or merged model; chat or predict."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from finetune.training.runio import CONFIG_FILE, RunError

RESET, EXIT = "/reset", "/exit"


class ChatError(RunError):
    """The folder cannot be chatted with, or a prompt file is bad; the message names the file and the fix."""


@dataclass
class ChatModel:
    model: Any
    tokenizer: Any
    device: Any
    system: str | None  # the system prompt the model was trained with (the run's data.system)
    kind: str  # run | adapter | merged


def _adapter_config(path: Path) -> Path | None:
    for candidate in (path / CONFIG_FILE, path.parent.parent / CONFIG_FILE):
        if candidate.is_file():
            return candidate
    return None


def load_chat_model(path: str | Path, device: str = "auto") -> ChatModel:
    """A run directory, one of its checkpoints or an exported adapter (adapter_config.json + the run's
    config.yaml: the base comes from the config), or a merged model folder (config.json; merge.json gives its
    system prompt). Raises ChatError naming what the folder lacks."""
    from finetune.models.base import is_model_dir, load_causal_lm, load_tokenizer, quiet_peft, resolve_model
    from finetune.training.config import load_config
    from finetune.training.steps import pick_device

    path = Path(path)
    if not path.is_dir():
        raise ChatError(f"{path}: no such folder; point at a run (data/runs/NAME), an export or a merged model")
    dev = pick_device(device)
    config = _adapter_config(path)
    if (path / "adapter_config.json").is_file() and config is not None:
        from peft import PeftModel

        cfg = load_config(config)
        base = resolve_model(cfg.model, cfg.model_cache_dir)
        tokenizer = load_tokenizer(path, fallback=base, template=cfg.chat_template)
        with quiet_peft():
            model = PeftModel.from_pretrained(load_causal_lm(base, device=dev), path).to(dev)
        kind = "adapter" if (path / "export.json").is_file() else "run"
        system = cfg.data.system
    elif is_model_dir(path):
        tokenizer, model = load_tokenizer(path), load_causal_lm(path, device=dev)
        record = path / "merge.json"
        system = json.loads(record.read_text(encoding="utf-8")).get("system_prompt") if record.is_file() else None
        kind = "merged"
    else:
        unfinished = " (the run has not finished: resume it with `finetune train`)" if (path / CONFIG_FILE).is_file() \
            else ""
        raise ChatError(f"{path}: neither an adapter (adapter_config.json with the run's config.yaml) nor a merged "
                        f"model (config.json){unfinished}")  # fmt: skip
    model.eval()
    return ChatModel(model, tokenizer, dev, system, kind)


def answer(cm: ChatModel, conversations: list[list[dict[str, str]]], max_new_tokens: int = 128,
           batch_size: int = 8) -> list[str]:  # fmt: skip
    """Greedy answers, one per conversation (the system prompt added where a conversation has none)."""
    from finetune.evaluation.evaluate import generate

    head = [{"role": "system", "content": cm.system}] if cm.system else []
    prompts = [c if c and c[0]["role"] == "system" else head + c for c in conversations]
    return generate(cm.model, cm.tokenizer, prompts, max_new_tokens, batch_size, cm.device)


def chat_loop(cm: ChatModel, lines: IO[str], out: IO[str], max_new_tokens: int = 128, system: str | None = None) -> int:
    """Read a user turn per line, print the answer; the conversation is kept (`/reset` clears it, `/exit` or the
    end of input ends it). Returns the number of answers."""
    if system is not None:
        cm.system = system or None
    history: list[dict[str, str]] = []
    n = 0
    for raw in lines:
        text = raw.strip()
        if not text:
            continue
        if text == EXIT:
            break
        if text == RESET:
            history = []
            out.write("(conversation cleared)\n")
            continue
        history.append({"role": "user", "content": text})
        reply = answer(cm, [history], max_new_tokens)[0]
        history.append({"role": "assistant", "content": reply})
        out.write(reply + "\n")
        out.flush()
        n += 1
    return n


def _prompt_of(rec: Any, line: int, path: Path) -> list[dict[str, str]]:
    """The conversation to answer: {"messages": [...]} (a last assistant turn is left out), {"prompt": "..."},
    Alpaca {"instruction", "input"}, or a JSON string."""
    if isinstance(rec, str) and rec.strip():
        return [{"role": "user", "content": rec}]
    if isinstance(rec, dict):
        if isinstance(rec.get("messages"), list) and rec["messages"]:
            msgs = [{"role": str(m.get("role")), "content": str(m.get("content"))} for m in rec["messages"]
                    if isinstance(m, dict)]  # fmt: skip
            while msgs and msgs[-1]["role"] == "assistant":
                msgs.pop()
            if msgs and msgs[-1]["role"] == "user":
                return msgs
        for key in ("prompt", "instruction"):
            if isinstance(rec.get(key), str) and rec[key].strip():
                extra = rec.get("input") if key == "instruction" else None
                text = f"{rec[key]}\n{extra}" if isinstance(extra, str) and extra.strip() else rec[key]
                return [{"role": "user", "content": text}]
    raise ChatError(f"{path}: line {line}: not a prompt; write {{\"prompt\": \"...\"}}, {{\"messages\": [...]}} "
                    "ending with a user turn, or an Alpaca record")  # fmt: skip


def predict_file(cm: ChatModel, src: str | Path, dst: str | Path, max_new_tokens: int = 128,
                 batch_size: int = 8) -> int:  # fmt: skip
    """Answer every prompt of the JSONL `src` into `dst` (JSONL: the input record plus "answer"), in order."""
    from finetune.data.jsonfile import lines
    from ingest.fsio import write_text_atomic

    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise ChatError(f"{src}: no such file (a JSONL of prompts)")
    records, prompts = [], []
    for i, line in enumerate(lines(src.read_text(encoding="utf-8")), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ChatError(f"{src}: line {i}: not JSON ({exc.msg})") from None
        prompts.append(_prompt_of(rec, i, src))
        records.append(rec if isinstance(rec, dict) else {"prompt": rec})
    answers = answer(cm, prompts, max_new_tokens, batch_size)
    body = "".join(json.dumps({**r, "answer": a}, ensure_ascii=False) + "\n" for r, a in zip(records, answers,
                                                                                              strict=True))
    write_text_atomic(dst, body)
    return len(answers)
