"""``python -m ctllm chat``: a terminal chat with any model spec, answers streamed as they are generated.

Reads one message per line from stdin (a terminal or a pipe); ``/reset`` starts a new conversation, ``/quit`` (or
end of input) leaves.
"""

from __future__ import annotations

import argparse
import sys
from typing import TextIO

from ctllm.models.generate import GenerationParams, stream_chat
from ctllm.models.loading import load_model
from ctllm.models.registry import resolve_spec
from ctllm.pairs.schema import Message
from ctllm.settings import Settings

NAME = "chat"
HELP = "chat with a model in the terminal (streaming)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default=None, help="model spec (default: the SFT model setting, 'embedded')")
    parser.add_argument("--base", default=None, help="base model spec for a LoRA adapter folder")
    parser.add_argument("--chat-template", default=None, help="replace the tokenizer's template: a name, .jinja file")
    parser.add_argument("--system", default="", help="system message")
    parser.add_argument("--temperature", type=float, default=0.7, help="0 = greedy (default 0.7)")
    parser.add_argument("--top-p", type=float, default=0.9, help="nucleus sampling mass (default 0.9)")
    parser.add_argument("--max-new-tokens", type=int, default=256, help="answer length limit (default 256)")
    parser.add_argument("--seed", type=int, default=None, help="sampling seed (default: random per answer)")


def chat_loop(
    loaded, params: GenerationParams, system: str, stdin: TextIO, stdout: TextIO, stderr: TextIO
) -> list[str]:
    """Answer each line of ``stdin``, streaming to ``stdout``; returns the answers given."""
    interactive = stdin.isatty()
    history: list[Message] = []
    answers: list[str] = []
    while True:
        if interactive:
            stderr.write("you> ")
            stderr.flush()
        line = stdin.readline()
        if not line:
            break
        text = line.strip()
        if not text:
            continue
        if text == "/quit":
            break
        if text == "/reset":
            history.clear()
            stderr.write("(new conversation)\n")
            continue
        history.append(Message(role="user", content=text))
        prefix = [Message(role="system", content=system)] if system else []
        shown = ""
        for shown_so_far in stream_chat(loaded, prefix + history, params):
            stdout.write(shown_so_far[len(shown) :])
            stdout.flush()
            shown = shown_so_far
        stdout.write("\n")
        stdout.flush()
        history.append(Message(role="assistant", content=shown))
        answers.append(shown)
    return answers


def run(args: argparse.Namespace, settings: Settings) -> int:
    params = GenerationParams(
        temperature=args.temperature, top_p=args.top_p, max_new_tokens=args.max_new_tokens, seed=args.seed
    )
    spec = resolve_spec(args.model or settings.sft_model, settings, base=args.base, chat_template=args.chat_template)
    print(f"Loading {spec.label} ...", file=sys.stderr, flush=True)
    loaded = load_model(spec, settings)
    if spec.note:
        print(f"note: {spec.note}", file=sys.stderr)
    print(f"{spec.label} on {loaded.device} ({loaded.dtype}). /reset starts over, /quit leaves.", file=sys.stderr)
    answers = chat_loop(loaded, params, args.system, sys.stdin, sys.stdout, sys.stderr)
    print(f"{len(answers)} answer(s).", file=sys.stderr)
    return 0
