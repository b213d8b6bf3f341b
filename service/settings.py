"""Settings of the chat service: where it listens, which models answer, personas, limits and keys."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from ingest.settings import IngestSettings

REPO_ROOT = Path(__file__).resolve().parents[1]


class PersonaConfig(BaseModel):
    """A character the persona route can speak as."""

    name: str = Field(description="short id used in model names: kongming-persona-<name>")
    display_name: str
    aliases: list[str] = Field(default_factory=list, description="how users address the persona")
    system_prompt: str
    model: str = Field(default="gemma-3-270m", description="base model: local HF folder, hub id or gemma-3-270m")
    adapter: str | None = Field(default=None, description="LoRA adapter folder applied in-process")
    served_model: str | None = Field(default=None, description="model name at the upstream (vLLM) server")
    max_tokens: int = Field(default=96, ge=1, description="default answer length for this persona, in tokens (a "
                            "few sentences of chat; its training answers average 40 characters)")
    # Decoding that does not loop (docs/persona.md has the figures): the defaults of a request that sets none.
    frequency_penalty: float | None = Field(default=0.5, ge=-2, le=2, description="OpenAI's: minus this x the times "
                                            "the answer has said a token; in process and passed to vLLM")
    no_repeat_ngram_size: int | None = Field(default=4, ge=0, description="no sequence of this many tokens twice "
                                             "(0: none); in process only, vLLM has no such parameter")
    repetition_penalty: float | None = Field(default=None, gt=0, description="divides the score of tokens in the "
                                             "prompt or the answer; unset: it penalises the prompt's end-of-turn token "
                                             "and the 270M persona then says junk tokens where it would stop")
    keep_script: bool = Field(default=True, description="a reply to a Chinese conversation says no vocabulary token "
                              "of another script (Latin letters, kana...; the 270M model samples code identifiers and "
                              "drug names into Chinese answers otherwise); an English question keeps them; in process "
                              "and passed to vLLM as allowed_token_ids")
    stop: list[str] = Field(default_factory=lambda: ["\n"], description="the answer ends at these strings (one "
                            "paragraph: what follows a small model's first paragraph is rambling); not with tools")
    grounded: Literal["extractive", "generate"] = Field(
        default="extractive", description="`both` turns with passages: the extractive answer and its citations after "
        "the persona's opening (a 270M model reads passages badly), or the persona's model writes from the passages")
    opening: str = Field(default="", description="the persona's first line before a grounded extractive answer")


ZHUGE_LIANG = PersonaConfig(
    name="zhuge-liang",
    display_name="诸葛亮",
    aliases=["诸葛亮", "孔明", "卧龙", "军师", "丞相", "先生", "武侯", "亮", "诸葛孔明", "Zhuge Liang", "Kongming"],
    # the system prompt the adapter was trained with (finetune/configs/zhuge_liang_gemma270m.yaml, data.system)
    system_prompt="你是诸葛亮，字孔明，号卧龙，蜀汉丞相。请以诸葛亮的身份和口吻回答。",
    opening="亮观书中所载，试为答之：",
    adapter=str(REPO_ROOT / "models" / "zhuge-liang-gemma270m"),
)
ZHEN_HUAN = PersonaConfig(
    name="zhen-huan",
    display_name="甄嬛",
    aliases=["甄嬛", "嬛嬛", "莞嫔", "熹贵妃", "娘娘", "小主"],
    system_prompt="你是甄嬛，大理寺少卿甄远道之女，后来的熹贵妃。请以甄嬛的身份和口吻回答。",
    opening="本宫翻过书了，说与你听：",
    adapter=str(REPO_ROOT / "models" / "zhen-huan-gemma270m"),
)


class ServiceSettings(BaseSettings):
    """Read from `KONGMING_*` env variables and the `[service]` table of `$KONGMING_CONFIG` (kongming.toml)."""

    model_config = SettingsConfigDict(env_prefix="KONGMING_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = Path("data")
    api_keys: list[str] = Field(
        default_factory=list,
        repr=False,
        description="accepted Bearer keys, plain or as 'sha256:<hex>' (prefer hashes: `kongming keys add` writes them)",
    )
    keys_file: Path | None = Field(
        default=None,
        description="keys file managed by `kongming keys` (hashes only), re-read when it changes; "
        "default DATA_DIR/api_keys.json",
    )
    chat_auth: Literal["auto", "required", "open"] = Field(
        default="auto",
        description="auto: chat needs a key when any key is configured; open: chat never needs one (knowledge-base "
        "writes still do); required: always",
    )
    rate_limit_per_minute: float = Field(default=0.0, ge=0, description="requests per minute per key (or client "
                                         "address without a key); 0 = no limit")
    rate_limit_burst: int = Field(default=10, ge=1, description="requests at once before the rate applies")
    upstream_url: str | None = Field(default=None, description="OpenAI-compatible server (vLLM), e.g. http://h:8001/v1")
    upstream_api_key: str | None = Field(default=None, repr=False)
    upstream_timeout: float = Field(default=120.0, gt=0)
    upstream_connect_timeout: float = Field(default=5.0, gt=0)
    rag_model: str | None = Field(
        default=None,
        description="model at the upstream that writes RAG answers; unset = the extractive answerer",
    )
    personas: list[PersonaConfig] = Field(default_factory=lambda: [ZHUGE_LIANG, ZHEN_HUAN])
    default_persona: str = "zhuge-liang"
    retrieval_k: int = Field(default=5, ge=1, le=50)
    append_sources: bool = Field(default=False, description="append the numbered sources to every answer's "
                                 "text (a request's kongming.sources or the x-kongming-sources header overrides it)")
    max_request_bytes: int = Field(default=1_000_000, ge=1024, description="body limit of the chat API (413 above)")
    max_upload_bytes: int = Field(default=100_000_000, ge=1024, description="body limit of knowledge-base uploads")
    max_file_bytes: int = Field(default=200_000_000, ge=1024, description="size limit of a file uploaded to "
                                "/v1/files (fine-tuning data)")
    finetune_bases: dict[str, str] = Field(default_factory=dict, description="base models fine-tuning jobs may "
                                           "name, besides gemma-3-270m: name -> HF folder or hub id")
    finetune_datasets: dict[str, Path] = Field(
        default_factory=lambda: {
            "诸葛亮 (三国演义, finetune data extract)": Path("persona/zhuge_liang/pairs.jsonl"),
            "甄嬛 (huanhuan.json)": Path("persona/huanhuan.json"),
            "外卖评论 (labelled CSV)": Path("classify/waimai_10k.csv"),
        },
        description="data sets the page's Fine-tune tab offers: name -> file (relative to DATA_DIR); those present")
    finetune_worker: bool = Field(default=True, description="`kongming serve` runs a fine-tuning worker process "
                                  "(started when a job waits); false where `kongming worker` runs apart")
    max_tokens_cap: int = Field(default=2048, ge=1)
    max_messages: int = Field(default=256, ge=1)
    router_model: Path | None = Field(default=None, description="fitted router (default: the one shipped)")
    ui: bool = Field(default=True, description="mount the Gradio chat page at /ui")
    cors_origins: list[str] = Field(default_factory=list, description="CORS allowed origins; off when empty")
    log_format: Literal["json", "text"] = Field(default="json", description="`kongming serve` log lines")
    log_level: str = "INFO"
    device: str = "cpu"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = Path(os.environ.get("KONGMING_CONFIG", "kongming.toml"))
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if toml.is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml, toml_table_header=("service",)))
        return tuple(sources)

    def persona(self, name: str | None = None) -> PersonaConfig | None:
        name = name or self.default_persona
        return next((p for p in self.personas if p.name == name), None)

    def keys_path(self) -> Path:
        return self.keys_file or self.data_dir / "api_keys.json"

    def upload_dir(self) -> Path:
        return self.data_dir / "uploads"

    def key_digests(self) -> set[str]:
        return {k.removeprefix("sha256:") if k.startswith("sha256:") else hash_key(k) for k in self.api_keys}


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def get_service_settings(**overrides: Any) -> ServiceSettings:
    return ServiceSettings(**{k: v for k, v in overrides.items() if v is not None})


def ingest_settings_for(settings: ServiceSettings, **overrides: Any) -> IngestSettings:
    """The knowledge-base settings the service uses (same env and TOML, same data dir)."""
    from ingest.settings import get_settings

    return get_settings(data_dir=settings.data_dir, **overrides)
