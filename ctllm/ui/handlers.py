"""Turning handler methods into functions Gradio can call.

Gradio reads a handler's signature to decide what to pass: the listed inputs by position, plus the
``gr.Request`` (and ``gr.SelectData``) wherever a parameter is annotated so. :func:`bind` fixes leading
arguments (like ``functools.partial``) while keeping that signature visible, and keeps generators generators
(Gradio streams only from generator functions), each step speaking the session's language (:func:`ctllm.ui.i18n.t`).

Ordinary user errors (a :class:`ctllm.errors.UserError`, or a ``gr.Error`` a handler raises) reach the page as a
message and the app log as one line, never as a traceback: :func:`bind` and :func:`form` convert them.
:func:`keyed` lets a handler return ``{name: value}`` for the components it changes (Gradio gets
``{component: value}``), instead of a tuple that must match an outputs list defined far away.
"""

from __future__ import annotations

import inspect
import logging
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import gradio as gr

from ctllm.errors import UserError
from ctllm.ui.i18n import session_language, steps_in

log = logging.getLogger("ctllm.ui")


def nothing_if_empty(result: Any) -> Any:
    """An empty ``{component: value}`` dict means "change nothing"; Gradio reads it as one value and fails, so it
    gets ``gr.skip()``, which skips every output."""
    return gr.skip() if isinstance(result, dict) and not result else result


@contextmanager
def user_errors(name: str) -> Iterator[None]:
    """A UserError becomes a ``gr.Error`` shown on the page; either is logged as one line, without a traceback
    (Gradio prints the traceback of every exception but a ``gr.Error`` with ``print_exception=False``)."""
    try:
        yield
    except UserError as error:
        log.info("%s: %s", name, error)
        raise gr.Error(str(error), print_exception=False) from None
    except gr.Error as error:
        log.info("%s: %s", name, error.message)
        error.print_exception = False
        raise


def bind(method: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
    """``method`` with its first parameters set to ``bound``."""
    signature = inspect.signature(method)
    params = list(signature.parameters.values())[len(bound) :]
    hints = typing.get_type_hints(method)

    if inspect.isgeneratorfunction(method):

        def handler(*args: Any, **kwargs: Any) -> Any:
            lang = session_language(next((a for a in (*args, *kwargs.values()) if isinstance(a, gr.Request)), None))
            with user_errors(name):
                for result in steps_in(lang, method(*bound, *args, **kwargs)):
                    yield nothing_if_empty(result)

    else:

        def handler(*args: Any, **kwargs: Any) -> Any:
            with user_errors(name):
                return nothing_if_empty(method(*bound, *args, **kwargs))

    name = getattr(method, "__name__", "handler")
    handler.__name__ = name
    handler.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    handler.__annotations__ = {p.name: hints[p.name] for p in params if p.name in hints}
    return handler


def form(method: Callable[..., Any], names: Sequence[str], extra: int = 0) -> Callable[..., Any]:
    """A handler taking ``len(names) + extra`` inputs one by one; calls ``method(dict(names → values), *rest,
    request=...)``. For forms too long to list as parameters."""
    count = len(names)

    def handler(*args: Any) -> Any:
        *values, request = args
        with user_errors(handler.__name__):
            return method(dict(zip(names, values[:count], strict=True)), *values[count:], request=request)

    handler.__name__ = getattr(method, "__name__", "handler")
    return named_inputs(handler, [*names, *(f"v{i}" for i in range(count, count + extra))])


def named_inputs(handler: Callable[..., Any], names: Sequence[str]) -> Callable[..., Any]:
    """``handler(*values, request)`` with a signature naming its inputs: the names API clients call it with."""
    parameters = [inspect.Parameter(name, inspect.Parameter.POSITIONAL_OR_KEYWORD) for name in names]
    parameters.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    handler.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    handler.__annotations__ = {"request": gr.Request}
    return handler


def keyed(handler: Callable[..., Any], components: Mapping[str, Any]) -> Callable[..., Any]:
    """``handler`` (made by :func:`bind` or :func:`form`) returns, or yields, ``{name: value}`` for the components it
    changes; Gradio gets ``{component: value}``. Register it with ``outputs=list(components.values())``; a name left
    out leaves its component as it is."""

    def by_component(result: Mapping[str, Any]) -> Any:
        if nothing_if_empty(result) == gr.skip():  # nothing to change (an empty dict, or one bind already skipped)
            return gr.skip()
        unknown = set(result) - set(components)
        if unknown:
            raise KeyError(f"{handler.__name__} returned values for no component: {sorted(unknown)}")
        return nothing_if_empty({components[name]: value for name, value in result.items()})

    if inspect.isgeneratorfunction(handler):

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            for result in handler(*args, **kwargs):
                yield by_component(result)

    else:

        def wrapped(*args: Any, **kwargs: Any) -> Any:
            return by_component(handler(*args, **kwargs))

    wrapped.__name__ = handler.__name__
    wrapped.__signature__ = inspect.signature(handler)  # type: ignore[attr-defined]
    wrapped.__annotations__ = dict(getattr(handler, "__annotations__", {}))
    return wrapped
