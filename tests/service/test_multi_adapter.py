"""Several LoRA adapters on one in-process base model: chosen per request, one base in memory, loaded and deleted
while the service runs."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from service.answer.persona import Engines
from service.engines import AdapterEngine, LocalEngine, SamplingParams
from service.errors import EngineUnavailable
from service.settings import PersonaConfig, get_service_settings

pytestmark = pytest.mark.anyio

HELLO = [{"role": "system", "content": "你是助手。"}, {"role": "user", "content": "你好，诸葛亮"}]
GREEDY = SamplingParams(max_tokens=16, temperature=0.0)


@pytest.fixture(scope="module")
def two_loras(tiny_chat_model: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    from tests.tinymodel import build_random_lora

    root = tmp_path_factory.mktemp("loras")
    return build_random_lora(tiny_chat_model, root / "one", seed=1), build_random_lora(tiny_chat_model, root / "two",
                                                                                        seed=2)


def _base_parameters(model: object) -> int:
    return sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)  # type: ignore[attr-defined]


async def test_each_request_gets_its_adapter_on_one_base(tiny_chat_model: Path, two_loras: tuple[Path, Path]) -> None:
    one, two = two_loras
    host = LocalEngine(tiny_chat_model, name="host")
    base = AdapterEngine(host, "base", None)
    first, second = AdapterEngine(host, "one", one), AdapterEngine(host, "two", two)

    plain = (await base.generate(HELLO, GREEDY)).text
    a = (await first.generate(HELLO, GREEDY)).text
    b = (await second.generate(HELLO, GREEDY)).text
    assert len({plain, a, b}) == 3
    # the same answers as one model per adapter (merged) and as the bare base: the selection is exact
    assert a == (await LocalEngine(tiny_chat_model, adapter_path=one).generate(HELLO, GREEDY)).text
    assert b == (await LocalEngine(tiny_chat_model, adapter_path=two).generate(HELLO, GREEDY)).text
    assert plain == (await LocalEngine(tiny_chat_model).generate(HELLO, GREEDY)).text
    # requests queued together each get their own adapter
    together = await asyncio.gather(*(e.generate(HELLO, GREEDY) for e in (second, base, first, second)))
    assert [c.text for c in together] == [b, plain, a, b]

    # one base model: its weights are in memory once, whatever the number of adapters
    from transformers import AutoModelForCausalLM

    assert set(host.adapters) == {"one", "two"}
    assert _base_parameters(host._model) == _base_parameters(AutoModelForCausalLM.from_pretrained(tiny_chat_model))


async def test_a_deleted_adapter_leaves_and_comes_back_on_use(
    tiny_chat_model: Path, two_loras: tuple[Path, Path]
) -> None:
    one, two = two_loras
    host = LocalEngine(tiny_chat_model, name="host")
    first, second = AdapterEngine(host, "one", one), AdapterEngine(host, "two", two)
    a = (await first.generate(HELLO, GREEDY)).text
    b = (await second.generate(HELLO, GREEDY)).text

    assert await first.unload() is True
    assert await first.unload() is False
    assert set(host.adapters) == {"two"}
    with pytest.raises(EngineUnavailable, match="adapter 'one' is not loaded"):
        await host.generate(HELLO, GREEDY, adapter="one")
    assert (await second.generate(HELLO, GREEDY)).text == b
    assert (await first.generate(HELLO, GREEDY)).text == a  # loaded again on use


async def test_an_adapter_folder_without_its_config_is_refused(tiny_chat_model: Path, tmp_path: Path) -> None:
    host = LocalEngine(tiny_chat_model, name="host")
    with pytest.raises(EngineUnavailable, match=r"no adapter_config\.json"):
        await AdapterEngine(host, "empty", tmp_path).generate(HELLO, GREEDY)
    assert host.adapters == {}


async def test_two_personas_on_one_base_share_one_engine(
    tiny_chat_model: Path, two_loras: tuple[Path, Path], tmp_path: Path
) -> None:
    one, two = two_loras
    personas = [
        PersonaConfig(name=n, display_name=n, system_prompt="你是助手。", model=str(tiny_chat_model), adapter=str(lora))
        for n, lora in (("a", one), ("b", two))
    ]
    engines = Engines(get_service_settings(data_dir=tmp_path, personas=personas, default_persona="a"))
    a, b = await engines.persona(personas[0]), await engines.persona(personas[1])
    assert isinstance(a, AdapterEngine) and isinstance(b, AdapterEngine)
    assert a.host is b.host
    assert (await a.generate(HELLO, GREEDY)).text != (await b.generate(HELLO, GREEDY)).text
    assert set(a.host.adapters) == {"kongming-persona-a", "kongming-persona-b"}
    await engines.aclose()
