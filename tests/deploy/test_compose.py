"""deploy/gpu: the compose file validates offline, and .env.example lists exactly the settings the code reads."""

from __future__ import annotations

import ast
import importlib
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
GPU = REPO / "deploy" / "gpu"
COMPOSE = GPU / "compose.yaml"
ENV_EXAMPLE = GPU / ".env.example"
PACKAGES = ("ingest", "service", "finetune")
# Read by the settings classes but not a field: the TOML file they also read.
NOT_FIELDS = {"KONGMING_CONFIG"}
_LISTED = re.compile(r"^#?\s*([A-Z][A-Z0-9_]*)=", re.M)
_USED = re.compile(r"\$\{([A-Z][A-Z0-9_]*)")


def settings_env_names() -> dict[str, str]:
    """Every environment name a pydantic-settings class in the packages reads -> the class that reads it.

    Finds the classes by parsing the sources (any `class X(BaseSettings)`), so a new settings class is covered
    without touching this test."""
    names: dict[str, str] = {}
    for package in PACKAGES:
        for path in sorted((REPO / package).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            classes = [
                node.name
                for node in tree.body
                if isinstance(node, ast.ClassDef)
                and any(getattr(b, "id", getattr(b, "attr", None)) == "BaseSettings" for b in node.bases)
            ]
            if not classes:
                continue
            module = importlib.import_module(".".join(path.relative_to(REPO).with_suffix("").parts))
            for name in classes:
                cls = getattr(module, name)
                prefix = str(cls.model_config.get("env_prefix", ""))
                for field, info in cls.model_fields.items():
                    env = (info.validation_alias if isinstance(info.validation_alias, str) else None) or field
                    names[(prefix + env).upper()] = f"{module.__name__}.{name}.{field}"
    return names


def env_example_names() -> list[str]:
    return _LISTED.findall(ENV_EXAMPLE.read_text(encoding="utf-8"))


def test_settings_classes_are_found() -> None:
    names = settings_env_names()
    assert {"KONGMING_UPSTREAM_URL", "KONGMING_API_KEYS", "KONGMING_CHROMA_URL", "KONGMING_COLLECTION"} <= set(names)


def test_env_example_lists_every_setting_and_nothing_else() -> None:
    settings = settings_env_names()
    listed = [n for n in env_example_names() if n.startswith("KONGMING_")]
    twice = sorted({n for n in listed if listed.count(n) > 1})
    assert not twice, f"listed twice in {ENV_EXAMPLE}: {twice}"
    missing = sorted(set(settings) - set(listed))
    assert not missing, (
        f"settings missing from {ENV_EXAMPLE.relative_to(REPO)}: "
        + ", ".join(f"{n} ({settings[n]})" for n in missing)
        + " -- add a commented line with the default and what it does"
    )
    unknown = sorted(set(listed) - set(settings) - NOT_FIELDS)
    assert not unknown, f"{ENV_EXAMPLE.relative_to(REPO)} lists names no settings class reads: {unknown}"


def test_compose_variables_are_documented_and_used() -> None:
    """Each ${VAR} of compose.yaml is in .env.example, and each non-setting there is used by compose.yaml."""
    text = COMPOSE.read_text(encoding="utf-8")
    used = set(_USED.findall(text))
    listed = set(env_example_names())
    assert not used - listed, f"compose.yaml uses variables .env.example does not document: {sorted(used - listed)}"
    compose_only = {n for n in listed if not n.startswith("KONGMING_")} - {"COMPOSE_PROJECT_NAME"}
    unused = sorted(compose_only - used)
    assert not unused, f".env.example lists variables compose.yaml never uses: {unused}"


def check_stack(config: dict[str, Any]) -> None:
    """What the stack must be, on the raw file or on the validator's resolved output."""
    services = config["services"]
    assert set(services) == {"vllm", "chroma", "kongming"}
    assert str(services["vllm"]["image"]).startswith("vllm/vllm-openai:")
    assert str(services["chroma"]["image"]).startswith("chromadb/chroma:")
    for name, svc in services.items():
        assert svc.get("healthcheck", {}).get("test"), f"{name} has no health check"
    depends = services["kongming"]["depends_on"]
    assert {k: v["condition"] for k, v in depends.items()} == {"vllm": "service_healthy", "chroma": "service_healthy"}
    assert services["kongming"]["build"]["dockerfile"] == "deploy/Dockerfile"
    assert (REPO / "deploy" / "Dockerfile").is_file()
    command = services["vllm"]["command"]
    command = command if isinstance(command, str) else " ".join(command)
    assert "--api-key" in command and "--served-model-name" in command
    env = services["kongming"]["environment"]
    env = env if isinstance(env, dict) else dict(e.split("=", 1) for e in env)
    assert "vllm:8000" in env["KONGMING_UPSTREAM_URL"]
    assert "chroma:8000" in env["KONGMING_CHROMA_URL"]
    assert "ports" not in services["vllm"] and "ports" not in services["chroma"], "only the service is published"


def test_compose_file_structure() -> None:
    check_stack(yaml.safe_load(COMPOSE.read_text(encoding="utf-8")))


def _validator() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def test_compose_config_validates() -> None:
    """`docker-compose config` (Debian's docker-compose, installed by .ci/run) resolves and validates the file
    without a Docker engine; the resolved stack is then checked as above."""
    validator = _validator()
    if validator is None:
        pytest.skip(
            "no compose validator: install Debian's docker-compose (`apt-get install docker-compose`, as .ci/run "
            "does) or the docker compose plugin"
        )
    # only the example file speaks: a KONGMING_/VLLM_ variable of the test's own environment would override it
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KONGMING_", "VLLM_", "SERVICE_"))}
    env["SERVICE_ENV_FILE"] = ".env.example"
    proc = subprocess.run(
        [*validator, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{' '.join(validator)} config failed:\n{proc.stderr}"
    resolved = yaml.safe_load(proc.stdout)
    check_stack(resolved)
    vllm = resolved["services"]["vllm"]
    command = vllm["command"] if isinstance(vllm["command"], str) else " ".join(vllm["command"])
    assert "${" not in command and "--model /models/gemma-3-270m" in command
    # the example serves the base model with one LoRA adapter per persona, named as the personas
    assert "--enable-lora" in command and "zhuge-liang=/adapters/zhuge-liang-gemma270m" in command


def test_compose_refuses_a_missing_upstream_key(tmp_path: Path) -> None:
    """vLLM's --api-key and the service's key come from one required variable: no key, no stack."""
    validator = _validator()
    if validator is None:
        pytest.skip("no compose validator (see test_compose_config_validates)")
    env_file = tmp_path / "env"
    env_file.write_text(
        "\n".join(line for line in ENV_EXAMPLE.read_text(encoding="utf-8").splitlines()
                  if not line.startswith("KONGMING_UPSTREAM_API_KEY=")),
        encoding="utf-8",
    )  # fmt: skip
    env = {k: v for k, v in os.environ.items() if not k.startswith("KONGMING_")} | {"SERVICE_ENV_FILE": ".env.example"}
    proc = subprocess.run(
        [*validator, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
        capture_output=True, text=True, env=env, cwd=REPO, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode != 0 and "KONGMING_UPSTREAM_API_KEY" in proc.stderr
