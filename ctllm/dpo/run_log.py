"""The run's log: train.log in the run dir (main process) and stderr."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

LOGGER_NAME = "ctllm.dpo.train"


def setup_logger(log_path: Path, is_main: bool) -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    close_handlers(logger)
    logger.propagate = False
    logger.setLevel(logging.INFO if is_main else logging.WARNING)
    formatter = logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%d %H:%M:%S")
    stream = logging.StreamHandler(sys.stderr)
    stream.setFormatter(formatter)
    logger.addHandler(stream)
    if is_main and not _stderr_is(log_path):
        file_handler = logging.FileHandler(log_path, encoding="utf-8")
        file_handler.setFormatter(formatter)
        logger.addHandler(file_handler)
    return logger


def close_handlers(logger: logging.Logger) -> None:
    for handler in list(logger.handlers):
        logger.removeHandler(handler)
        handler.close()


def log_to_file_only(logger: logging.Logger, message: str, *args: Any) -> None:
    """An error line for train.log alone (the CLI prints the message on stderr itself)."""
    for handler in logger.handlers:
        if isinstance(handler, logging.FileHandler):
            handler.handle(logger.makeRecord(logger.name, logging.ERROR, __file__, 0, message, args, None))


def _stderr_is(path: Path) -> bool:
    """True when stderr already goes to ``path`` (a job started with its output in train.log)."""
    try:
        return path.exists() and os.path.samestat(os.fstat(sys.stderr.fileno()), path.stat())
    except (OSError, ValueError, AttributeError):
        return False


def format_summary(summary: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value:.4f}" if isinstance(value, float) else f"{key}={value}"
                     for key, value in summary.items())
