"""Import gradio without its stub writer.

Gradio's component metaclass calls ``create_or_modify_pyi`` for every component class on every import: it reads and
``ast``-parses each component's source file and rewrites the ``.pyi`` stub beside it, an aid for gradio's own
developers. Here it was about 45 % of ``import gradio`` (2.8 of 6.3 s under a profiler), the largest part of the
app's start-up. A finder on ``sys.meta_path`` swaps that function for a no-op the moment ``gradio.component_meta`` has
executed, before any component class exists. Nothing else changes: type stubs only matter to an editor.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from types import ModuleType

TARGET = "gradio.component_meta"


def _no_stubs(*args: object, **kwargs: object) -> None:
    return None


class _PatchingLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        self.loader.exec_module(module)
        if callable(getattr(module, "create_or_modify_pyi", None)):
            module.create_or_modify_pyi = _no_stubs


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name: str, path: object, target: object = None) -> importlib.machinery.ModuleSpec | None:
        if name != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _PatchingLoader(spec.loader)
        return spec


def install() -> bool:
    """Register the finder; False when gradio is already imported (too late to help) or it is registered."""
    if TARGET in sys.modules or any(isinstance(finder, _Finder) for finder in sys.meta_path):
        return False
    sys.meta_path.insert(0, _Finder())
    return True
