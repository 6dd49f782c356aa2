"""``python -m ctllm COMMAND ...``: every command lives in its own module under ctllm.cli."""

from ctllm.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
