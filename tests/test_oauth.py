"""Sign-in with Hugging Face: the login button exists only on a Space (or when the operator asks for it), and a
request carrying an OAuth session gets the role the operator gave that account. No network: the app runs with the
variables a Space with ``hf_oauth: true`` sets, and the test signs the session cookie the way Gradio's
SessionMiddleware does after a real login (the OAuth provider is never contacted)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import gradio as gr
import itsdangerous
import pytest
from gradio_client import Client

from ctllm.settings import Settings
from ctllm.ui.app import build_app
from ctllm.ui.auth import LOCAL_USER, Role, identify
from tests.e2e.conftest import RunningApp, stop_app
from tests.hosted_app import data_dir_with_a_pairs_file, start_hosted_app

SECRET = "test-oauth-secret"
SPACE_ENV = {
    "SYSTEM": "spaces",
    "SPACE_ID": "someone/ctllm-studio",
    "OAUTH_CLIENT_ID": "test-client",
    "OAUTH_CLIENT_SECRET": SECRET,
    "OAUTH_SCOPES": "openid profile",
    "OPENID_PROVIDER_URL": "https://huggingface.co",  # only contacted when someone clicks the button
}
OPERATOR_ENV = {"CTLLM_ADMINS": "alice", "CTLLM_ANNOTATORS": ""}
IMPORT = {"upload": None, "path": "incoming.jsonl", "mapping_text": "", "collection": "by-oauth"}


def set_space_env(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    """As a Space sets them before the app starts (gradio.oauth reads the OAuth ones once, at import)."""
    import gradio.oauth

    for name, value in env.items():
        monkeypatch.setenv(name, value)
        if hasattr(gradio.oauth, name):
            monkeypatch.setattr(gradio.oauth, name, value)


def login_buttons(demo: gr.Blocks) -> list[gr.LoginButton]:
    return [block for block in demo.blocks.values() if isinstance(block, gr.LoginButton)]


def test_the_login_button_is_built_only_on_a_space(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in SPACE_ENV:
        monkeypatch.delenv(name, raising=False)
    local = build_app(settings)
    assert not login_buttons(local) and not local.expects_oauth
    assert identify(None, settings) == identify(gr.Request(), settings)
    assert identify(None, settings).name == LOCAL_USER and identify(None, settings).role == Role.ADMIN

    set_space_env(monkeypatch, SPACE_ENV)
    space = build_app(settings)
    assert len(login_buttons(space)) == 1 and space.expects_oauth  # Gradio adds its /login routes for it
    assert identify(None, settings).role == Role.VIEWER  # on a Space, nobody is the all-powerful local user

    off = Settings.from_env({"CTLLM_HF_OAUTH": "off"}, data_dir=settings.data_dir)  # the operator's switch wins
    assert off.hf_oauth == "off" and not login_buttons(build_app(off))


def test_a_space_without_hf_oauth_starts_without_the_button(settings, monkeypatch: pytest.MonkeyPatch) -> None:
    """Gradio refuses to start a LoginButton on a Space whose OAuth variables are missing: leave it out instead."""
    set_space_env(monkeypatch, {name: value for name, value in SPACE_ENV.items() if name != "OAUTH_CLIENT_ID"})
    assert not login_buttons(build_app(settings))


def session_cookie(userinfo: dict[str, str], secret: str = SECRET, expires_in: float = 3600) -> dict[str, str]:
    """The cookie Gradio's SessionMiddleware sets after a Hugging Face login (same key, same encoding)."""
    session = {
        "oauth_info": {
            "access_token": "hf_oauth_test",
            "token_type": "bearer",
            "scope": "openid profile",
            "expires_at": int(time.time() + expires_in),
            "userinfo": {"sub": "0", "profile": "", "picture": "", **userinfo},
        }
    }
    key = hashlib.sha256((secret + "-v4").encode()).hexdigest()
    payload = base64.b64encode(json.dumps(session).encode("utf-8"))
    signed = itsdangerous.TimestampSigner(key).sign(payload).decode("utf-8")
    return {"Cookie": f"session={signed}"}


@pytest.fixture(scope="module")
def space_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningApp]:
    tmp = tmp_path_factory.mktemp("space")
    data_dir = data_dir_with_a_pairs_file(tmp)
    running = start_hosted_app(tmp, {**SPACE_ENV, **OPERATOR_ENV}, data_dir=data_dir)
    yield running
    stop_app(running)


def whoami(app: RunningApp, headers: dict[str, str] | None) -> str:
    return str(Client(app.url, headers=headers, verbose=False).predict(api_name="/whoami"))


def refusal(client: Client, api_name: str, args: dict[str, object]) -> str:
    try:
        result = client.predict(api_name=api_name, **args)
    except Exception as error:  # gradio_client raises AppError carrying the server's gr.Error message
        return str(error)
    pytest.fail(f"{api_name} succeeded: {str(result)[:300]}")


def test_oauth_profiles_get_the_operator_roles_in_the_running_app(space_app: RunningApp) -> None:
    assert "**alice** (admin)" in whoami(space_app, session_cookie({"preferred_username": "alice", "name": "A"}))
    assert "**bob** (annotator)" in whoami(space_app, session_cookie({"preferred_username": "bob", "name": "B"}))
    # The display name is free text: naming yourself "alice" gives you nothing.
    spoof = session_cookie({"preferred_username": "mallory", "name": "alice"})
    assert "**mallory** (annotator)" in whoami(space_app, spoof)
    # No session, a cookie not signed with the Space's secret, an expired login: an anonymous viewer.
    assert "**anonymous** (viewer)" in whoami(space_app, None)
    forged = session_cookie({"preferred_username": "alice", "name": "A"}, secret="guessed")
    assert "**anonymous** (viewer)" in whoami(space_app, forged)
    expired = session_cookie({"preferred_username": "alice", "name": "A"}, expires_in=-60)
    assert "**anonymous** (viewer)" in whoami(space_app, expired)

    bob = Client(space_app.url, headers=session_cookie({"preferred_username": "bob", "name": "B"}), verbose=False)
    assert "needs the admin role; bob is annotator" in refusal(bob, "/import_pairs", IMPORT)
    anonymous = Client(space_app.url, verbose=False)
    assert "needs the annotator role; anonymous is viewer" in refusal(anonymous, "/label_first", {"reason": ""})
    assert not list(Path(space_app.data_dir).glob("exports/*"))

    alice = Client(space_app.url, headers=session_cookie({"preferred_username": "alice", "name": "A"}), verbose=False)
    report = alice.predict(api_name="/import_pairs", **IMPORT)[0]
    assert "Imported" in report, report
