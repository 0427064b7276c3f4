"""Settings: environment variables, overrides, and errors that name the variable."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import socketio

from asgi_resume import ConfigError, ResumeMiddleware, Settings
from asgi_resume.config import OPTIONS
from asgi_resume.principal import PrincipalSource

CONFIGURATION = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"


def test_defaults() -> None:
    settings = Settings.load({})
    assert settings.redis_url is None
    assert settings.path == "/socket.io/"
    assert settings.events is None
    assert settings.stream_id == ("message_id",)
    assert settings.resume_event == "resume-stream"
    assert (settings.maxlen, settings.ttl, settings.done_ttl) == (2000, 3600, 30)
    assert settings.key_prefix == "asgi_resume"
    assert settings.principal[0] == PrincipalSource("auth", "token")


def test_environment_variables_are_read() -> None:
    settings = Settings.load(
        {
            "ASGI_RESUME_REDIS_URL": "redis://127.0.0.1:1/0",
            "ASGI_RESUME_PATH": "ws/socket.io",
            "ASGI_RESUME_EVENTS": "events, chat",
            "ASGI_RESUME_STREAM_ID": "data.stream",
            "ASGI_RESUME_MAXLEN": "50",
            "ASGI_RESUME_PRINCIPAL": "cookie:sid,scope:user",
        }
    )
    assert settings.redis_url == "redis://127.0.0.1:1/0"
    assert settings.path == "/ws/socket.io/"
    assert settings.events == frozenset({"events", "chat"})
    assert settings.stream_id == ("data", "stream")
    assert settings.maxlen == 50
    assert settings.principal == (PrincipalSource("cookie", "sid"), PrincipalSource("scope", "user"))


def test_keyword_arguments_override_the_environment() -> None:
    settings = Settings.load({"ASGI_RESUME_MAXLEN": "50"}, maxlen=70, events=["a", "b"])
    assert settings.maxlen == 70
    assert settings.events == frozenset({"a", "b"})


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("ASGI_RESUME_MAXLEN", "many"),
        ("ASGI_RESUME_MAXLEN", "0"),
        ("ASGI_RESUME_TTL", "-1"),
        ("ASGI_RESUME_DONE_TTL", "soon"),
        ("ASGI_RESUME_STREAM_ID", "data..id"),
        ("ASGI_RESUME_EVENTS", " , "),
        ("ASGI_RESUME_PRINCIPAL", "password:x"),
        ("ASGI_RESUME_PRINCIPAL", "scope:session"),
        ("ASGI_RESUME_KEY_PREFIX", "has space"),
        ("ASGI_RESUME_WRITE_TIMEOUT", "0"),
        ("ASGI_RESUME_DONE", "data..done"),
        # found by attack: accepted, then every frame went out unstamped (an OverflowError in the
        # memory log's deque, a PEXPIRE Redis refuses) or each frame's log expired at once
        ("ASGI_RESUME_MAXLEN", "99999999999999999999999"),
        ("ASGI_RESUME_TTL", "1e300"),
        ("ASGI_RESUME_TTL", "0.0001"),
        ("ASGI_RESUME_MAX_HOLDS", "10000001"),
        # and JWT algorithms PyJWT does not know: every token then named nobody
        ("ASGI_RESUME_JWT_ALGORITHMS", "HS265"),
    ],
)
def test_an_invalid_value_fails_at_startup_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigError, match=re.escape(variable)) as raised:
        ResumeMiddleware(socketio.ASGIApp(socketio.AsyncServer(async_mode="asgi")))
    option = next(option for option in OPTIONS if option.env == variable)
    assert option.help in str(raised.value)  # what the setting is for, with the error


def test_an_invalid_keyword_names_itself() -> None:
    with pytest.raises(ConfigError, match="maxlen="):
        Settings.load({}, maxlen=-3)
    with pytest.raises(ConfigError, match="unknown setting"):
        Settings.load({}, max_len=3)


def test_settings_and_options_agree() -> None:
    assert [f.name for f in dataclasses.fields(Settings)] == [option.name for option in OPTIONS]


def test_the_configuration_page_documents_every_variable_with_its_default() -> None:
    page = CONFIGURATION.read_text()
    for option in OPTIONS:
        rows = [line for line in page.splitlines() if line.startswith(f"| `{option.env}`")]
        assert rows, f"docs/configuration.md's table lacks {option.env}"
        if not option.default:
            assert "| unset |" in rows[0], rows[0]
        else:  # in its row, or (when long) verbatim elsewhere on the page
            assert f"`{option.default}`" in rows[0] or option.default in page, (option.env, rows[0])


@pytest.mark.parametrize("url", ["http://127.0.0.1:6379", "valkey//x", "redis://host:port/0", "redis://host/abc"])
def test_a_bad_redis_url_names_the_variable(url: str) -> None:
    with pytest.raises(ConfigError, match="ASGI_RESUME_REDIS_URL"):
        Settings.load({"ASGI_RESUME_REDIS_URL": url})


def test_the_open_webui_preset() -> None:
    settings = Settings.load({"ASGI_RESUME_PRESET": "open-webui", "WEBUI_SECRET_KEY": "k"})
    assert settings.path == "/ws/socket.io/"
    assert settings.principal == (PrincipalSource("jwt", "id"),)
    assert settings.jwt_secret == "k"
    assert settings.variant == ("shared",)
    assert settings.events == frozenset({"events"})
    assert len(settings.exclude) == 2  # chat:list, request:interaction:done
    # a variable of its own still wins over the preset
    mine = Settings.load({"ASGI_RESUME_PRESET": "open-webui", "WEBUI_SECRET_KEY": "k", "ASGI_RESUME_PATH": "/x"})
    assert mine.path == "/x/"


def test_the_open_webui_preset_needs_the_apps_secret() -> None:
    with pytest.raises(ConfigError, match="WEBUI_SECRET_KEY"):
        Settings.load({"ASGI_RESUME_PRESET": "open-webui"})
    with pytest.raises(ConfigError, match="ASGI_RESUME_PRESET"):
        Settings.load({"ASGI_RESUME_PRESET": "wordpress"})


def test_a_jwt_principal_needs_a_secret() -> None:
    with pytest.raises(ConfigError, match="ASGI_RESUME_JWT_SECRET"):
        Settings.load({"ASGI_RESUME_PRINCIPAL": "jwt:sub"})
    with pytest.raises(ConfigError, match="ASGI_RESUME_JWT_ALGORITHMS"):
        Settings.load(
            {"ASGI_RESUME_PRINCIPAL": "jwt:sub", "ASGI_RESUME_JWT_SECRET": "k", "ASGI_RESUME_JWT_ALGORITHMS": "none"}
        )


def test_a_jwt_algorithm_that_verifies_with_a_public_key_needs_one() -> None:
    """Found by attack: RS256 with a shared secret was accepted, and every token named nobody. (Where
    PyJWT has no ``cryptography``, it knows no such algorithm: refused as unknown.)"""
    environ = {"ASGI_RESUME_PRINCIPAL": "jwt:id", "ASGI_RESUME_JWT_SECRET": "s3cret"}
    with pytest.raises(ConfigError, match="RS256"):
        Settings.load({**environ, "ASGI_RESUME_JWT_ALGORITHMS": "RS256"})
    assert Settings.load({**environ, "ASGI_RESUME_JWT_ALGORITHMS": "HS256,HS512"}).jwt_algorithms == ("HS256", "HS512")


@pytest.mark.parametrize("url", ["unix:///tmp/redis.sock", "unix:///tmp/redis.sock?db=2", "rediss://h:6380/3"])
def test_a_good_redis_url_is_taken(url: str) -> None:
    assert Settings.load({"ASGI_RESUME_REDIS_URL": url}).redis_url == url  # (found by review: unix:// was refused)


def test_the_root_path_is_one_slash() -> None:
    assert Settings.load({"ASGI_RESUME_PATH": "/"}).path == "/"
