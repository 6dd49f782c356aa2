"""The app imports gradio without gradio's stub writer (see ctllm.ui.gradio_import), and still builds."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import REPO

CHECK = """
import ctllm.ui
import gradio
import gradio.component_meta as meta
from ctllm.ui.gradio_import import _no_stubs
assert meta.create_or_modify_pyi is _no_stubs, meta.create_or_modify_pyi
assert gradio.Textbox(label="x").label == "x"  # components are still made by the same metaclass
"""


def test_gradio_is_imported_without_its_stub_writer() -> None:
    done = subprocess.run([sys.executable, "-c", CHECK], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]


def test_install_is_a_no_op_once_gradio_is_imported() -> None:
    code = "import gradio, sys; from ctllm.ui import gradio_import; assert not gradio_import.install()"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
