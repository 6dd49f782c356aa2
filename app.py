"""CT-LLM DPO Studio: ``python app.py [--port 7860] [--data-dir DIR] [--sft-model SPEC] ...`` (also a Space's
entry point). Builds the app from ctllm.ui and launches it; models load on first use, so the page is up within
seconds."""

from __future__ import annotations

import os
import sys

from ctllm.settings import Settings


def main(argv: list[str] | None = None) -> None:
    settings = Settings.from_args(argv if argv is not None else sys.argv[1:]).ensure_dirs()
    from ctllm.ui.app import DEFAULT_CONCURRENCY, build_app, launch_options
    from ctllm.ui.context import AppContext

    ctx = AppContext(settings)
    ctx.prepare_in_background()  # sample pairs on first start, re-attach to running jobs
    demo = build_app(settings, ctx)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY)
    on_space = bool(os.environ.get("SPACE_ID"))
    demo.launch(
        # On a Space, Gradio's own GRADIO_SERVER_NAME / PORT apply.
        server_name=None if on_space else settings.host,
        server_port=None if on_space else settings.port,
        allowed_paths=[str(settings.exports_dir)],
        **launch_options(settings),
    )


if __name__ == "__main__":
    main()
