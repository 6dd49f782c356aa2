"""Turning handler methods into functions Gradio can call.

Gradio reads a handler's signature to decide what to pass: the listed inputs by position, plus the
``gr.Request`` (and ``gr.SelectData``) wherever a parameter is annotated so. :func:`bind` fixes leading
arguments (like ``functools.partial``) while keeping that signature visible, and keeps generators generators
(Gradio streams only from generator functions).
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any

import gradio as gr


def bind(method: Callable[..., Any], *bound: Any) -> Callable[..., Any]:
    """``method`` with its first parameters set to ``bound``."""
    signature = inspect.signature(method)
    params = list(signature.parameters.values())[len(bound) :]
    hints = typing.get_type_hints(method)

    if inspect.isgeneratorfunction(method):

        def handler(*args: Any, **kwargs: Any) -> Any:
            yield from method(*bound, *args, **kwargs)

    else:

        def handler(*args: Any, **kwargs: Any) -> Any:
            return method(*bound, *args, **kwargs)

    handler.__name__ = getattr(method, "__name__", "handler")
    handler.__signature__ = signature.replace(parameters=params)  # type: ignore[attr-defined]
    handler.__annotations__ = {p.name: hints[p.name] for p in params if p.name in hints}
    return handler


def form(method: Callable[..., Any], names: Sequence[str], extra: int = 0) -> Callable[..., Any]:
    """A handler taking ``len(names) + extra`` inputs one by one; calls ``method(dict(names → values), *rest,
    request=...)``. For forms too long to list as parameters."""
    count = len(names)

    def handler(*args: Any) -> Any:
        *values, request = args
        return method(dict(zip(names, values[:count], strict=True)), *values[count:], request=request)

    parameters = [inspect.Parameter(f"v{i}", inspect.Parameter.POSITIONAL_OR_KEYWORD) for i in range(count + extra)]
    parameters.append(inspect.Parameter("request", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=gr.Request))
    handler.__name__ = getattr(method, "__name__", "handler")
    handler.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
    handler.__annotations__ = {"request": gr.Request}
    return handler
