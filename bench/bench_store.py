"""Pairs store benchmark at the seed's scale: 183k Chinese + 46k English pairs.

Generates a synthetic set (prompt 20–200 characters, responses 50–800, lengths uniform; running text from a
Zipf-distributed lexicon so character and word statistics resemble real text), writes it as TRL JSONL, imports
it with ``python -m ctllm import`` in a fresh process, then measures on the imported store: a page of 20 anywhere
(page-number jumps, keyset next pages, filters and sorts), full-text search in Chinese and English, and label
writes (one writer, then 16 threads × 200). Prints each figure next to its goal (issue 2, "Speed"); rows marked
"extra" go beyond the issue's goals. The import's CPU seconds are printed too: on a shared machine they say
more than the wall time.

    python bench/bench_store.py              # full scale (about 1.2 GB of data dir, a few minutes)
    python bench/bench_store.py --pairs 20000
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402

from ctllm.pairs.store import PairQuery, Store  # noqa: E402

ZH_WORDS = (
    "我们 你 他们 安全 问题 如何 可以 不能 建议 法律 违法 行为 帮助 请 "
    "这个 那个 因为 所以 但是 如果 我 的 是 了 在 有 和 就 不 人 都 "
    "一个 上 也 很 到 说 要 去 会 着 没有 看 好 自己 这 药物 健康 "
    "医生 朋友 家人 工作 学习 学校 老师 孩子 父母 社会 国家 经济 技术 "
    "计算机 程序 数据 模型 训练 语言 中文 英文 回答 拒绝 正向 风险 隐私 "
    "信息 个人 网络 攻击 密码 账户 银行 钱 偷 骗 伤害 自杀 歧视 性别 "
    "种族 危险 化学 武器 爆炸 火 水 电 食物 饮食 运动 身体 心理 情绪 "
    "压力 焦虑 抑郁 睡眠 时间 今天 明天 昨天 城市 北京 上海 旅游 历史 "
    "文化 文学 诗歌 音乐 电影 书 故事 写 读 想 知道 理解 解释 分析 比较 "
    "总结 例如 首先 其次 最后 总之 专业 咨询 寻求 支持 热线 报警 保护 "
    "尊重 他人 权利 责任 后果 严重 不应该 合法 途径 解决 方法 沟通 冷静 "
    "理性 判断 标准 规定 政策 公司 员工 同事 领导 客户 服务 产品 质量 "
    "价格 市场 投资 股票 风格 设计 代码 函数 变量 错误 调试 测试"
).split()
ZH_PUNCT = "，。？！、；："
EN_WORDS = (
    "the a an of to and in is that it for you this with as on be are not can how what why should your I we they "
    "help safe illegal privacy data model language please answer question would could people time way use make know "
    "good bad think because however first second finally example information personal account bank money steal hurt "
    "danger chemical weapon health doctor friend family work study school teacher child parent society country "
    "economy technology computer program train English Chinese reply refuse suggest advice law password security "
    "support professional hotline respect rights consequence serious legal solution communicate calm reason policy "
    "company employee customer service product quality price market invest design code function variable error test"
).split()

GOALS = {"import": 60.0, "page": 50.0, "search": 200.0, "label": 10.0}


def _zipf(n: int, s: float, q: float) -> np.ndarray:
    weights = 1.0 / (np.arange(1, n + 1) + q) ** s
    return weights / weights.sum()


def zh_lexicon(rng: np.random.Generator, size: int = 30_000) -> list[str]:
    """Hand-written domain words first (the most used), then words of 1–4 characters drawn from the 20,902 CJK
    ideographs with Zipf–Mandelbrot weights fitted to Chinese text (top 100 characters ≈ 48 % of it, top 1,000
    ≈ 89 %), so character and phrase statistics resemble real text and the index is not flattered."""
    chars = np.arange(0x4E00, 0x9FA6)
    rng.shuffle(chars)
    lengths = rng.choice([1, 2, 3, 4], size=size, p=[0.3, 0.55, 0.1, 0.05])
    picks = rng.choice(chars, size=int(lengths.sum()), p=_zipf(len(chars), 1.8, 80))
    words, start = [], 0
    for length in lengths.tolist():
        words.append("".join(map(chr, picks[start : start + length].tolist())))
        start += length
    return ZH_WORDS + words


def en_lexicon(rng: np.random.Generator, size: int = 30_000) -> list[str]:
    letters = np.array(list("etaoinshrdlcumwfgypbvkjxqz"))
    letter_p = _zipf(26, 1.0, 2)
    words = ["".join(rng.choice(letters, size=int(n), p=letter_p)) for n in rng.integers(3, 11, size=size)]
    return EN_WORDS + words


def corpus(lexicon: list[str], chars: int, zh: bool, rng: np.random.Generator) -> str:
    """Running text: words by Zipf usage (1/rank), sentence punctuation now and then."""
    mean = sum(map(len, lexicon[:2000])) / 2000 + (0 if zh else 1)
    picks = rng.choice(len(lexicon), size=int(chars / mean * 1.1), p=_zipf(len(lexicon), 1.0, 2))
    stops = rng.random(len(picks)) < 0.08
    if zh:
        marks = rng.choice(list(ZH_PUNCT), size=len(picks))
        pieces = [lexicon[i] + (m if stop else "") for i, m, stop in zip(picks.tolist(), marks, stops, strict=True)]
        return "".join(pieces)[:chars]
    return " ".join(lexicon[i] + ("." if stop else "") for i, stop in zip(picks.tolist(), stops, strict=True))[:chars]


def generate(path: Path, n_pairs: int, seed: int) -> tuple[int, int, float]:
    """Write the JSONL; returns (Chinese pairs, English pairs, mean characters per pair)."""
    rng = random.Random(seed)
    n_zh = round(n_pairs * 183 / 229)
    n_en = n_pairs - n_zh
    np_rng = np.random.default_rng(seed)
    corpora = {True: corpus(zh_lexicon(np_rng), 8_000_000, True, np_rng),
               False: corpus(en_lexicon(np_rng), 8_000_000, False, np_rng)}

    def text(zh: bool, low: int, high: int) -> str:
        corpus = corpora[zh]
        length = rng.randint(low, high)
        start = rng.randrange(len(corpus) - length)
        return corpus[start : start + length].strip() or "x"

    total_chars = 0
    order = [True] * n_zh + [False] * n_en
    rng.shuffle(order)
    with path.open("w", encoding="utf-8") as out:
        for zh in order:
            prompt = text(zh, 20, 200) + ("？" if zh else "?")
            chosen, rejected = text(zh, 50, 800), text(zh, 50, 800)
            total_chars += len(prompt) + len(chosen) + len(rejected)
            out.write(json.dumps({"prompt": prompt, "chosen": chosen, "rejected": rejected}, ensure_ascii=False))
            out.write("\n")
    return n_zh, n_en, total_chars / max(n_pairs, 1)


def timed(fn: Callable[[], object], repeat: int) -> list[float]:
    """Milliseconds per call."""
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1000)
    return times


def _each(fn: Callable[[str], object], queries: list[str]) -> list[float]:
    """Milliseconds per call, one call per query."""
    times = []
    for query in queries:
        start = time.perf_counter()
        fn(query)
        times.append((time.perf_counter() - start) * 1000)
    return times


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20)[-1] if len(values) >= 20 else max(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, default=229_000, help="pairs to generate (default: the seed's 229k)")
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a temporary one, removed)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=200, help="timed calls per read figure")
    args = parser.parse_args()

    work = args.dir or Path(tempfile.mkdtemp(prefix="bench-store-"))
    work.mkdir(parents=True, exist_ok=True)
    data_dir, jsonl = work / "data", work / "pairs.jsonl"
    shutil.rmtree(data_dir, ignore_errors=True)
    rng = random.Random(args.seed + 1)
    rows: list[tuple[str, str, float, float, str]] = []

    try:
        start = time.perf_counter()
        n_zh, n_en, mean_chars = generate(jsonl, args.pairs, args.seed)
        print(f"generated {n_zh:,} zh + {n_en:,} en pairs, mean {mean_chars:.0f} characters per pair, "
              f"{jsonl.stat().st_size / 1e6:.0f} MB, in {time.perf_counter() - start:.1f} s")

        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        command = [sys.executable, "-m", "ctllm", "import", str(jsonl), "--collection", "bench", "--data-dir",
                   str(data_dir)]
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
        import_s = time.perf_counter() - start
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        import_cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        if done.returncode != 0:
            print(done.stdout, done.stderr, file=sys.stderr)
            return 1
        print(done.stdout.strip())
        db_path = data_dir / "studio.sqlite"
        size_mb = sum(p.stat().st_size for p in data_dir.glob("studio.sqlite*")) / 1e6
        rows.append(("import (CLI, fresh process), wall", "", import_s, GOALS["import"], "s"))
        rows.append(("import (CLI, fresh process), CPU seconds used", "", import_cpu, GOALS["import"], "s"))

        store = Store(db_path)
        total = store.count("bench")
        pages = (total + 19) // 20
        ids = [sp.id for sp in store.page("bench", page=1, size=1).items]
        first_id = ids[0]

        rows.append(_row("page jump, random page (id order)",
                         timed(lambda: store.page("bench", page=rng.randint(1, pages)), args.repeat), "page"))
        cursors = [(first_id + rng.randrange(total),) for _ in range(args.repeat)]
        it = iter(cursors)
        rows.append(_row("next page from a random cursor", timed(lambda: store.page("bench", after=next(it)),
                                                                 args.repeat), "page"))
        rows.append(_row("page jump, sort by length difference",
                         timed(lambda: store.page("bench", sort="-length_diff", page=rng.randint(1, pages)),
                               args.repeat), "page"))
        en_pages = max(1, n_en // 20)
        rows.append(_row("page jump, language = en",
                         timed(lambda: store.page("bench", PairQuery(language="en"), page=rng.randint(1, en_pages)),
                               args.repeat), "page"))

        start = time.perf_counter()
        store.save_scores("bench-run", ((first_id + i, rng.gauss(0.5, 1.0)) for i in range(total)))
        print(f"saved {total:,} scores in {time.perf_counter() - start:.1f} s")
        rows.append(_row("page jump, sort by a run's margin",
                         timed(lambda: store.page("bench", sort="score", score_name="bench-run",
                                                  page=rng.randint(1, pages)), args.repeat), "page"))

        # Labels before the label-state filters, so those have something to filter.
        label_ms = []
        for _ in range(500):
            pid = first_id + rng.randrange(total)
            start = time.perf_counter()
            store.add_label(pid, "bench-solo", rng.choice(("first", "second", "tie", "skip")),
                            rng.choice(("chosen", "rejected")))
            label_ms.append((time.perf_counter() - start) * 1000)
        rows.append(_row("label write, one annotator", label_ms, "label"))
        concurrent_ms, stored, wall = _concurrent_labels(store, first_id, total)
        rows.append(_row(f"label write, 16 threads x 200 ({stored:,} stored, {wall:.1f} s)", concurrent_ms, "label"))
        rows.append(_row("next unlabelled for an annotator",
                         timed(lambda: store.next_unlabelled("bench", "bench-solo", first_id + rng.randrange(total)),
                               args.repeat), "page"))
        rows.append(_row("extra: page jump, label state = unlabelled",
                         timed(lambda: store.page("bench", PairQuery(label_state="unlabelled"),
                                                  page=rng.randint(1, pages - 200)), args.repeat), "page"))

        zh_queries, en_queries = _queries(store, first_id, total, rng, args.repeat)
        for name, queries in (("zh", zh_queries), ("en", en_queries)):
            rows.append(_row(f"search, {name} (first page)", _each(lambda q: store.search("bench", q), queries),
                             "search"))
        it = iter(zh_queries)
        rows.append(_row("extra: search count, zh, capped at 10,000",
                         timed(lambda: store.count("bench", PairQuery(text=next(it)), limit=10_000), len(zh_queries)),
                         "search"))
        it = iter([q[:2] for q in zh_queries])
        rows.append(_row("search, zh 2-character queries", timed(lambda: store.search("bench", next(it)),
                                                                  len(zh_queries)), "search"))
        it = iter([q[:1] for q in zh_queries])
        rows.append(_row("search, zh 1-character queries", timed(lambda: store.search("bench", next(it)),
                                                                  len(zh_queries)), "search"))
        it = iter(zh_queries)
        rows.append(_row("extra: search, zh, sorted by length difference, page 1-5",
                         timed(lambda: store.page("bench", PairQuery(text=next(it)), sort="-length_diff",
                                                  page=rng.randint(1, 5)), len(zh_queries)), "search"))
        store.close()
    finally:
        if args.dir is None:
            shutil.rmtree(work, ignore_errors=True)

    print(f"\nstore: {total:,} pairs, {size_mb:,.0f} MB on disk; {os.cpu_count()} CPU cores; load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'figure':<58} {'p50':>9} {'p95':>9} {'goal':>9}  ok")
    for name, p50_text, value, goal, unit in rows:
        mark = "yes" if value <= goal else "NO"
        print(f"{name:<58} {p50_text:>9} {value:>7.1f}{unit:<2} {goal:>6.0f}{unit:<3} {mark}")
    return 0


def _row(name: str, ms: list[float], goal: str) -> tuple[str, str, float, float, str]:
    return name, f"{statistics.median(ms):.1f}ms", p95(ms), GOALS[goal], "ms"


def _concurrent_labels(store: Store, first_id: int, total: int) -> tuple[list[float], int, float]:
    times: list[float] = []
    lock = threading.Lock()

    def annotate(worker: int) -> None:
        rng = random.Random(worker)
        mine = []
        for pid in rng.sample(range(first_id, first_id + total), 200):
            start = time.perf_counter()
            store.add_label(pid, f"bench-{worker}", rng.choice(("first", "second", "tie")), "chosen")
            mine.append((time.perf_counter() - start) * 1000)
        with lock:
            times.extend(mine)

    threads = [threading.Thread(target=annotate, args=(w,)) for w in range(16)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    stored = store.db.execute("SELECT count(*) FROM labels WHERE annotator LIKE 'bench-%' AND annotator != "
                              "'bench-solo'").fetchone()[0]
    return times, stored, wall


def _queries(store: Store, first_id: int, total: int, rng: random.Random, n: int) -> tuple[list[str], list[str]]:
    """Substrings of stored texts (2–8 characters for Chinese, 1–3 words for English) and vocabulary words."""
    zh, en = [], []
    while len(zh) < n or len(en) < n:
        pair = store.get_pair(first_id + rng.randrange(total)).pair
        text = rng.choice((pair.chosen, pair.rejected, pair.last_user))
        if pair.language == "zh" and len(zh) < n:
            if rng.random() < 0.5:
                zh.append(rng.choice([w for w in ZH_WORDS if len(w) >= 2]))
            else:
                length = rng.randint(2, 8)
                start = rng.randrange(max(1, len(text) - length))
                zh.append(text[start : start + length])
        elif pair.language == "en" and len(en) < n:
            words = text.split()
            count = rng.randint(1, 3)
            start = rng.randrange(max(1, len(words) - count))
            en.append(" ".join(words[start : start + count]))
    return zh, en


if __name__ == "__main__":
    raise SystemExit(main())
