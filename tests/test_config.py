"""Config: every key in config.toml, env overrides, one clear line for a bad value."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import msgspec
import pytest

from service.core import config as config_mod
from tests.helpers import ROOT


def test_config_toml_holds_every_key_with_its_default() -> None:
    raw = tomllib.loads((ROOT / "config.toml").read_text())
    defaults = msgspec.to_builtins(config_mod.Config())
    assert set(raw) == set(defaults)
    for section, values in defaults.items():
        assert set(raw[section]) == set(values), section
    cfg = config_mod.load(ROOT / "config.toml", environ={})
    assert cfg == config_mod.Config()


def test_readme_lists_every_key() -> None:
    import re

    readme = (ROOT / "README.md").read_text()
    text = readme[readme.index("| section | keys |") :].split("\n\n", 1)[0]
    rows = dict(re.findall(r"^\| `(\w+)` \| (.*) \|$", text, re.M))
    defaults = msgspec.to_builtins(config_mod.Config())
    assert set(rows) == set(defaults)
    for section, values in defaults.items():
        listed = set(re.findall(r"`(\w+)`", rows[section]))
        assert set(values) <= listed, (section, set(values) - listed)


@pytest.mark.parametrize("keys", ['[""]', '["ok-key", " "]', '["a b"]'])
def test_blank_api_keys_are_refused(tmp_path: Path, keys: str) -> None:
    # `api_keys = [""]` must not read as "no keys" (auth silently off on a public address)
    path = tmp_path / "c.toml"
    path.write_text(f"[auth]\napi_keys = {keys}\n")
    with pytest.raises(config_mod.ConfigError, match=r"auth\.api_keys"):
        config_mod.load(path, environ={})


def test_env_overrides_every_type() -> None:
    cfg = config_mod.load(
        os.devnull,
        environ={
            "TIDINGS_HTTP_PORT": "9001",
            "TIDINGS_JOBS_LEASE_S": "2.5",
            "TIDINGS_AUTH_API_KEYS": "a, b,,c",
            "TIDINGS_REDIS_URL": "redis://x:1/2",
            "TIDINGS_LOG_LEVEL": "debug",
        },
    )
    assert cfg.http.port == 9001
    assert cfg.jobs.lease_s == 2.5
    assert cfg.auth.api_keys == ["a", "b", "c"]
    assert cfg.redis.url == "redis://x:1/2"
    assert cfg.log.level == "debug"


@pytest.mark.parametrize(
    ("env", "text", "named"),
    [
        ({"TIDINGS_HTTP_PORT": "eighty"}, "", "http.port (or TIDINGS_HTTP_PORT)"),
        ({"TIDINGS_HTTP_PORT": "70000"}, "", "http.port"),
        ({"TIDINGS_JOBS_LEASE_S": "-1"}, "", "jobs.lease_s"),
        ({"TIDINGS_LOG_LEVEL": "loud"}, "", "log.level"),
        ({}, "[http]\nprot = 1\n", "prot"),
        ({}, "[htp]\nport = 1\n", "htp"),
        ({}, "[http\n", "cannot read"),
    ],
)
def test_bad_config_names_the_key(
    tmp_path: Path, env: dict[str, str], text: str, named: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(config_mod.ConfigError) as e:
        config_mod.load(path, environ=env)
    assert named in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_config_stops_startup_with_one_line() -> None:
    env = {**os.environ, "TIDINGS_CONFIG": os.devnull, "TIDINGS_HTTP_PORT": "x"}
    for module in ("service", "workers"):
        out = subprocess.run(
            [sys.executable, "-m", module], env=env, capture_output=True, text=True, timeout=30
        )
        assert out.returncode == 2
        assert out.stderr.strip().count("\n") == 0
        assert "http.port" in out.stderr
