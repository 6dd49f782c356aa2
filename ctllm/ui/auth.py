"""Who is asking, and may they? Every UI handler calls :func:`require` before it touches anything.

Roles are ordered: viewer < annotator < admin.
- On localhost with no authentication configured there is one local user with every right.
- Otherwise the user name comes from ``launch(auth=...)`` or Hugging Face OAuth; admins are listed in
  ``Settings.admins``; annotators in ``Settings.annotators`` (empty: every signed-in user annotates);
  an anonymous visitor is a viewer.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from enum import IntEnum

import gradio as gr

from ctllm.settings import Settings

LOCAL_USER = "local"
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


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


def _oauth_name(request: gr.Request) -> str | None:
    raw = getattr(request, "request", None)
    scope = getattr(raw, "scope", None) or {}
    if "session" not in scope:  # no OAuth (no SessionMiddleware) on this server
        return None
    session = scope["session"]
    if not session:
        return None
    info = session.get("oauth_info") or {}
    userinfo = info.get("userinfo") or {}
    return userinfo.get("preferred_username") or userinfo.get("name")


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
    """The user behind ``request`` if they hold ``role``; otherwise raise :class:`Forbidden`."""
    user = identify(request, settings)
    if not user.can(role):
        raise Forbidden(
            f"Not allowed: this action needs the {role.name.lower()} role; {user.name} is {user.role.name.lower()}."
        )
    return user
