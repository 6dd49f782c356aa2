"""Who is asking, and may they? Every UI handler calls :func:`require` before it touches anything.

Roles are ordered: viewer < annotator < admin.
- On localhost with no authentication configured there is one local user with every right.
- Otherwise the user name comes from ``launch(auth=...)`` or Hugging Face OAuth (the ``gr.LoginButton`` built
  by :func:`login_button` on a Space); admins are listed in ``Settings.admins``; annotators in
  ``Settings.annotators`` (empty: every signed-in user annotates); an anonymous visitor is a viewer.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import gradio as gr

from ctllm.settings import Settings
from ctllm.ui.i18n import use_language

log = logging.getLogger(__name__)

LOCAL_USER = "local"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}
# What a Space with ``hf_oauth: true`` in its README front matter sets; Gradio refuses to start without them.
SPACE_OAUTH_VARIABLES = ("OAUTH_CLIENT_ID", "OAUTH_CLIENT_SECRET", "OAUTH_SCOPES", "OPENID_PROVIDER_URL")
OAUTH_PACKAGES = ("authlib", "itsdangerous")  # gradio[oauth]
_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


class Role(IntEnum):
    VIEWER = 1
    ANNOTATOR = 2
    ADMIN = 3


@dataclass(frozen=True)
class User:
    name: str
    role: Role

    def can(self, role: Role) -> bool:
        return self.role >= role


class Forbidden(gr.Error):
    """Raised by :func:`require`; Gradio shows its message in the browser and to API clients."""


def is_local_mode(settings: Settings) -> bool:
    """No auth configured, not on a Space, bound to a loopback address."""
    return not settings.auth and not os.environ.get("SPACE_ID") and settings.host in LOOPBACK_HOSTS


def oauth_wanted(settings: Settings, env: Mapping[str, str] | None = None) -> bool:
    """Hugging Face sign-in is offered on a Space (``SPACE_ID``) unless the operator sets CTLLM_HF_OAUTH=off, and
    elsewhere only when they set it on."""
    env = os.environ if env is None else env
    switch = settings.hf_oauth.strip().lower()
    if switch in _FALSE:
        return False
    return switch in _TRUE or bool(env.get("SPACE_ID"))


def oauth_unavailable(env: Mapping[str, str] | None = None) -> str | None:
    """Why a login button would stop the app from starting (None when it can be served)."""
    env = os.environ if env is None else env
    missing = [name for name in OAUTH_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return f"the packages {', '.join(missing)} are missing: install gradio[oauth]"
    if env.get("SYSTEM") == "spaces" and env.get("SPACE_ID"):  # Gradio's own test for "on a Space"
        unset = [name for name in SPACE_OAUTH_VARIABLES if not env.get(name)]
        if unset:
            return f"{', '.join(unset)} not set: add 'hf_oauth: true' to the README front matter of the Space"
        return None
    # Off a Space Gradio signs everyone in as the machine's own Hugging Face account (a debugging aid).
    # Lazy: importing huggingface_hub takes seconds; start-up (the app, the CLI) does not need it.
    from huggingface_hub import get_token

    if get_token() is None:
        return "off a Space, Gradio's mocked sign-in needs this machine logged in to Hugging Face (hf auth login)"
    return None


def login_button(settings: Settings, env: Mapping[str, str] | None = None) -> gr.LoginButton | None:
    """A "Sign in with Hugging Face" button where sign-in is wanted and possible (call inside the Blocks)."""
    if not oauth_wanted(settings, env):
        return None
    problem = oauth_unavailable(env)
    if problem:
        log.warning("no Hugging Face sign-in: %s (visitors stay viewers)", problem)
        return None
    return gr.LoginButton(size="sm", elem_id="ui-login")


def _session(request: gr.Request) -> Mapping[str, Any]:
    """The signed session cookie's content; empty without OAuth (no SessionMiddleware on this server)."""
    raw = getattr(request, "request", None) or request
    scope = getattr(raw, "scope", None)
    if isinstance(scope, dict):
        return scope.get("session") or {}
    return getattr(raw, "session", None) or {}


def _oauth_name(request: gr.Request) -> str | None:
    """The Hugging Face user name of a signed-in visitor. Only ``preferred_username`` (the unique account name)
    counts: the display name is free text that anyone could set to an admin's name."""
    info = _session(request).get("oauth_info") or {}
    expires = info.get("expires_at")
    if isinstance(expires, (int, float)) and expires < time.time():
        return None
    name = (info.get("userinfo") or {}).get("preferred_username")
    return name if isinstance(name, str) and name else None


def identify(request: gr.Request | None, settings: Settings) -> User:
    name = None
    if request is not None:
        name = getattr(request, "username", None) or _oauth_name(request)
    if not name:
        if is_local_mode(settings):
            return User(LOCAL_USER, Role.ADMIN)
        return User("anonymous", Role.VIEWER)
    if name in settings.admins:
        return User(name, Role.ADMIN)
    if not settings.annotators or name in settings.annotators:
        return User(name, Role.ANNOTATOR)
    return User(name, Role.VIEWER)


def require(request: gr.Request | None, role: Role, settings: Settings) -> User:
    """The user behind ``request`` if they hold ``role``; otherwise raise :class:`Forbidden`. From here on the
    handler's :func:`ctllm.ui.i18n.t` speaks the language that ``request``'s session chose."""
    use_language(request)
    user = identify(request, settings)
    if not user.can(role):
        raise Forbidden(
            f"Not allowed: this action needs the {role.name.lower()} role; {user.name} is {user.role.name.lower()}."
        )
    return user
