"""The one settings object: flags over CTLLM_* variables over Gradio's own variables over defaults."""

from __future__ import annotations

from pathlib import Path

from ctllm.settings import Settings


def test_gradio_server_variables_are_honoured_off_a_space() -> None:
    settings = Settings.from_env({"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7999"})
    assert (settings.host, settings.port) == ("0.0.0.0", 7999)


def test_ctllm_variables_and_flags_win_over_gradio_ones() -> None:
    env = {"GRADIO_SERVER_NAME": "0.0.0.0", "GRADIO_SERVER_PORT": "7999", "CTLLM_PORT": "8001"}
    assert Settings.from_env(env).port == 8001
    assert Settings.from_env(env).host == "0.0.0.0"
    flagged = Settings.from_args(["--port", "8002", "--host", "127.0.0.2"], env=env)
    assert (flagged.host, flagged.port) == ("127.0.0.2", 8002)


def test_defaults_without_any_variable(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=tmp_path)
    assert (settings.host, settings.port, settings.data_dir) == ("127.0.0.1", 7860, tmp_path)
    assert Settings.from_env({"GRADIO_SERVER_PORT": ""}).port == 7860  # set but empty: the default
