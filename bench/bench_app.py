"""The app's speed goals (issue 4), each figure printed beside its goal.

    python bench/bench_app.py                 # everything: start, chat, pairs at 229k
    python bench/bench_app.py --only start    # or chat, pairs; --pairs 20000 for a smaller store

- start: ``python app.py`` in a fresh process; time until the port answers HTTP (goal <= 5 s) and until the
  whole app is served (``/gradio_api/info``), median of 3 starts.
- chat: the Chat tab's own handlers (the code a browser's event runs, minus the Gradio queue) on the embedded
  model, models already loaded: first token on each side with both streaming at once (goal <= 1 s each), and
  both sides' 128-token answers together vs one side alone (goal <= 1.3x), for SFT + a LoRA run on it, for two
  models (the right side a second copy of the model, as a fully trained run would be) and for one model on both
  sides, each beside the previous behaviour measured in the same run (``as_before``); then a turn with history,
  re-encoded against continued from the kept KV caches.
  Browser-side time to first token: bench/bench_chat_browser.py.
- pairs: a store of 229k synthetic pairs (183k Chinese + 46k English, written straight through the store API);
  server time of the Pairs tab's handlers for a page turn, a page-number jump deep in the collection, a label
  (record + next pair + render) and a move (goal <= 100 ms each, p95).

Other processes on a 2-core machine skew every number; the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from ctllm.settings import Settings  # noqa: E402


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def verdict(value: float, goal: float) -> str:
    return "ok" if value <= goal else "MISSED"


def load() -> str:
    return "load average " + " ".join(f"{x:.1f}" for x in os.getloadavg())


# --------------------------------------------------------------------------------------------------- start


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def one_start(data_dir: Path) -> tuple[float, float]:
    port = free_port()
    base = f"http://127.0.0.1:{port}/"
    started = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, str(REPO / "app.py"), "--data-dir", str(data_dir), "--port", str(port)],
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "0"},
    )
    first = ready = None
    try:
        while time.perf_counter() - started < 300:
            if first is None and http_ok(base):
                first = time.perf_counter() - started
            if http_ok(base + "gradio_api/info"):
                ready = time.perf_counter() - started
                break
            time.sleep(0.05)
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)
    if first is None or ready is None:
        raise RuntimeError("the app did not start within 300 s")
    return first, ready


def bench_start(data_dir: Path) -> None:
    one_start(data_dir)  # first start: creates the store and imports the samples; not counted
    runs = [one_start(data_dir) for _ in range(3)]
    first = statistics.median(r[0] for r in runs)
    ready = statistics.median(r[1] for r in runs)
    print(
        f"start: first HTTP answer {first:.2f} s (goal <= 5 s: {verdict(first, 5)}); "
        f"whole app served {ready:.2f} s (no goal; gradio import + build) [{load()}]"
    )


# --------------------------------------------------------------------------------------------------- chat


@contextmanager
def as_before() -> Iterator[None]:
    """Chat generation as it was before this change: both sides on one model in one batch of 2, every other model
    in its own thread, every thread with all of torch's threads, a LoRA run's adapter beside the weights (not
    merged). A baseline measured in the same run."""
    from ctllm.models import generate, loading

    saved = generate._threads_each, generate.on_shared_base, generate.batching_pays, loading.get_model
    get_model = loading.get_model
    generate._threads_each = lambda parallel: generate.THREADS
    generate.on_shared_base, generate.batching_pays = list, lambda jobs: True  # batches on one model only
    loading.get_model = lambda spec, settings, merged=False: get_model(spec, settings)
    try:
        yield
    finally:
        generate._threads_each, generate.on_shared_base, generate.batching_pays, loading.get_model = saved


def lora_run(base_folder: Path, out: Path) -> Path:
    """A LoRA adapter on the embedded model, shaped as the cpu presets train one (r 16, every linear layer), with
    the adapter's initial weights (B = 0: answers as long as the base's, so the timings compare like for like)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(base_folder, dtype=torch.float32)
    config = LoraConfig(r=16, lora_alpha=32, target_modules="all-linear")
    get_peft_model(model, config).save_pretrained(out)
    return out


def bench_chat(data_dir: Path, tokens: int) -> None:
    from ctllm.models.embedded import embedded_folder, ensure_embedded
    from ctllm.models.loading import get_model
    from ctllm.ui.chat_tab import SIDES, ChatHandlers, Side, Turn, TurnSettings
    from ctllm.ui.context import AppContext

    cache = Path(os.environ.get("CTLLM_TEST_MODEL_CACHE", REPO / ".cache" / "test-models"))
    settings = Settings(data_dir=data_dir, allowed_roots=(data_dir, cache)).ensure_dirs()
    folder = embedded_folder(settings.models_dir)
    if not folder.exists() and (cache / folder.name / "model.safetensors").exists():
        os.symlink(cache / folder.name, folder)
    ensure_embedded(settings.models_dir)
    copy = str(folder)  # a second spec: a second model copy, as a fully trained DPO run would be
    lora = str(lora_run(folder, data_dir / "lora-run"))  # a LoRA run on the SFT model, as the cpu presets train
    get_model("embedded", settings), get_model(copy, settings), get_model(lora, settings, merged=True)
    h = ChatHandlers(AppContext(settings))
    prompt = "Write a long, detailed story about a lighthouse keeper and a storm."

    def timed(updates, sides: tuple[str, ...]) -> dict[str, tuple[float, float, str]]:
        """Per side: seconds to its first character, to its last token (before scoring), and its answer."""
        start = time.perf_counter()
        first: dict[str, float] = {}
        last: dict[str, float] = {}
        latest: dict[str, Side] = {}
        for update in updates:
            now = time.perf_counter() - start
            for which in sides:
                side = update.get(which)
                if side is None:
                    continue
                latest[which] = side
                if side.answer and which not in first:
                    first[which] = now
                if side.done and which not in last:
                    last[which] = now
        return {w: (first[w], last[w], latest[w].answer) for w in sides}

    def form(dpo: str = "embedded") -> TurnSettings:
        return TurnSettings("embedded", dpo, False, 0.1, 0.0, 1.0, tokens, 0)

    def both(dpo: str) -> dict[str, tuple[float, float, str]]:
        return timed(h.send(prompt, Turn(), Side(), Side(), form(dpo)), SIDES)

    warm = {k: v for update in h.send(prompt, Turn(), Side(), Side(), form(lora)) for k, v in update.items()}
    turn, left, right = warm["turn"], warm["left"], warm["right"]  # warm-up, and a finished turn to regenerate
    alone = timed(h.regenerate("left", turn, left, right), ("left",))["left"]
    one = alone[1]
    n = len(get_model("embedded", settings).tokenizer(alone[2], add_special_tokens=False)["input_ids"])
    print(f"chat: one side alone {n} tokens in {one:.2f} s, first token {alone[0]:.2f} s [{load()}]")
    cases = (
        ("SFT + a LoRA run on it (a thread each)", lora),
        ("two models on other weights (two threads sharing the cores)", copy),
        ("one model on both sides (a thread each)", "embedded"),
    )
    for label, dpo in cases:
        one = timed(h.regenerate("left", turn, left, right), ("left",))["left"][1]  # the baseline again, beside it
        figures = {}
        for when in ("before", "now"):
            with as_before() if when == "before" else nullcontext():
                times = both(dpo)
            together = max(times[w][1] for w in SIDES)
            figures[when] = (together, max(times[w][0] for w in SIDES), times)
        together, worst_first, times = figures["now"]
        print(
            f"chat, {label}: first token left {times['left'][0]:.2f} s, right {times['right'][0]:.2f} s "
            f"(goal <= 1 s: {verdict(worst_first, 1.0)}); both answers {together:.2f} s = {together / one:.2f}x "
            f"one side (goal <= 1.3x: {verdict(together / one, 1.3)}); before this change "
            f"{figures['before'][0]:.2f} s = {figures['before'][0] / one:.2f}x "
            f"(one side alone just before: {one:.2f} s) [{load()}]"
        )
    # A turn with history: re-encoding both conversations (no chat id: no kept caches) against
    # each side continuing alone from its kept KV cache (the Chat tab's path), for one model and for SFT + LoRA.
    for dpo in ("embedded", lora):
        first = {k: v for update in h.send(prompt, Turn(), Side(), Side(), form(dpo)) for k, v in update.items()}
        turn, left, right = first["turn"], first["left"], first["right"]
        follow_up = "Now tell the same story from the storm's point of view."
        what = "one model" if dpo == "embedded" else "SFT + LoRA run"
        for label, chat_id in (("re-encoded", ""), ("continued from kept caches", turn.chat_id)):
            times = timed(h.send(follow_up, replace(turn, chat_id=chat_id), left, right, form(dpo)), SIDES)
            print(
                f"chat with history ({what}), {label}: first token on both sides "
                f"{max(times[w][0] for w in SIDES):.2f} s, both answers {max(times[w][1] for w in SIDES):.2f} s "
                f"(goal <= 1.5 s to the first token) [{load()}]"
            )


# --------------------------------------------------------------------------------------------------- pairs


def fill_store(settings: Settings, n_pairs: int, seed: int = 0) -> None:
    from ctllm.pairs.schema import Pair, user_prompt
    from ctllm.pairs.store import Store

    rng = random.Random(seed)
    zh_chars = "我们你他们安全问题如何可以不能建议法律违法行为帮助请这个那个因为所以但是如果的是了在有和就不人都"
    en_words = (
        "the a of to and in is that it for you this with as on be are not can how what why should your "
        "help safe illegal privacy data model language please answer question people time way"
    ).split()

    def text(zh: bool, low: int, high: int) -> str:
        length = rng.randint(low, high)
        if zh:
            return "".join(rng.choice(zh_chars) for _ in range(length))
        words, size = [], 0
        while size < length:
            word = rng.choice(en_words)
            words.append(word)
            size += len(word) + 1
        return " ".join(words)

    def pairs():
        n_zh = round(n_pairs * 183 / 229)
        for i in range(n_pairs):
            zh = i < n_zh
            yield Pair(
                user_prompt(text(zh, 20, 200) + f" #{i}"),
                text(zh, 50, 800),
                text(zh, 50, 800),
                source="bench",
                language="zh" if zh else "en",
            )

    store = Store(settings.db_path)
    store.create_collection("bench")
    store.add_pairs("bench", pairs())
    store.close()


def bench_pairs(data_dir: Path, n_pairs: int, repeat: int) -> None:
    from ctllm.ui.context import AppContext
    from ctllm.ui.pairs_tab import PairFilters, new_view, standalone

    settings = Settings(data_dir=data_dir).ensure_dirs()
    started = time.perf_counter()
    fill_store(settings, n_pairs)
    print(f"pairs: {n_pairs:,} pairs written through the store API in {time.perf_counter() - started:.0f} s")
    h = standalone(AppContext(settings))

    def browse(page: int, state: str = "all") -> object:
        return h.browse(PairFilters("bench", label_state=state), page, new_view(), None)[h.ui.view]

    view = browse(1, "not_mine")
    pages = n_pairs // 20
    timings: dict[str, list[float]] = {
        "page turn (next page)": [],
        "page jump (random page number)": [],
        "label + next pair": [],
        "move to next pair": [],
    }
    for _ in range(repeat):
        start = time.perf_counter()
        view = h.turn_page(1, view)[h.ui.view]
        timings["page turn (next page)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        browse(random.randint(1, pages))
        timings["page jump (random page number)"].append(time.perf_counter() - start)
        start = time.perf_counter()
        view = h.vote(random.choice(["first", "second", "tie", "both_bad"]), view, "", None)[h.ui.view]
        timings["label + next pair"].append(time.perf_counter() - start)
        start = time.perf_counter()
        view = h.move(1, view)[h.ui.view]
        timings["move to next pair"].append(time.perf_counter() - start)
    print(f"pairs at {n_pairs:,} [{load()}]:")
    for name, values in timings.items():
        ms = [v * 1000 for v in values]
        print(
            f"  {name:34s} p50 {statistics.median(ms):6.1f} ms  p95 {p95(ms):6.1f} ms  "
            f"(goal <= 100 ms: {verdict(p95(ms), 100)})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", choices=("start", "chat", "pairs"), action="append")
    parser.add_argument("--pairs", type=int, default=229_000)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=40)
    args = parser.parse_args()
    parts = args.only or ["start", "chat", "pairs"]
    root = Path(tempfile.mkdtemp(prefix="bench-app-"))
    try:
        if "start" in parts:
            bench_start(root / "start")
        if "chat" in parts:
            bench_chat(root / "chat", args.tokens)
        if "pairs" in parts:
            bench_pairs(root / "pairs", args.pairs, args.repeat)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
