"""Start-up of the app as a user runs it: ``python app.py`` in a fresh process until the real app serves
``/config`` (not the "starting…" page, which answers at once). Goal on a quiet 2-core machine: <= 5 s.

    python bench/bench_startup.py [--starts 3]

Printed beside its baseline from the same sitting: the same ``app.py`` with gradio's stub writer left on (gradio
imported before ``ctllm.ui`` can register ``ctllm.ui.gradio_import``), which is how the app started before. Then one
in-process breakdown of where the time goes: importing gradio, building the Blocks, ``launch()``.
Other processes on a 2-core machine skew every number; the load average is printed with the figures.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
GOAL_S = 5.0
BASELINE = "import gradio, runpy, sys; sys.argv[0] = 'app.py'; runpy.run_path('app.py', run_name='__main__')"
STAGES = """
import time; start = time.perf_counter(); marks = []
import ctllm.ui, gradio; marks.append(("import gradio", time.perf_counter()))
import tempfile
from ctllm.settings import Settings
from ctllm.ui.app import DEFAULT_CONCURRENCY, build_app, launch_options
from ctllm.ui.context import AppContext
marks.append(("import ctllm.ui.app", time.perf_counter()))
settings = Settings(data_dir=__import__("pathlib").Path(tempfile.mkdtemp())).ensure_dirs()
demo = build_app(settings, AppContext(settings)); demo.queue(default_concurrency_limit=DEFAULT_CONCURRENCY)
marks.append(("build the Blocks", time.perf_counter()))
demo.launch(server_name="127.0.0.1", server_port=PORT, prevent_thread_lock=True, quiet=True, **launch_options(settings))
marks.append(("launch()", time.perf_counter()))
previous = start
for name, at in marks:
    print(f"  {name:<22} {at - previous:5.2f} s")
    previous = at
demo.close()
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def load() -> str:
    return "load " + " ".join(f"{x:.1f}" for x in os.getloadavg())


def time_to_config(command: list[str], data_dir: Path) -> float:
    port = free_port()
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "0", "GRADIO_SERVER_PORT": str(port)}
    start = time.perf_counter()
    process = subprocess.Popen(
        [*command, "--data-dir", str(data_dir)], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        while process.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/config", timeout=5) as response:
                    if response.status == 200:
                        return time.perf_counter() - start
            except (urllib.error.URLError, OSError):
                pass  # not up yet, or the starting page's 503
            time.sleep(0.02)
        raise RuntimeError(f"{command} exited with {process.returncode}")
    finally:
        process.terminate()
        process.wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp) / "data"
        now = [sys.executable, "app.py"]
        before = [sys.executable, "-c", BASELINE]
        time_to_config(now, data_dir)  # first start creates the store and imports the samples: not counted
        pairs = [(time_to_config(now, data_dir), time_to_config(before, data_dir)) for _ in range(args.starts)]
    ours = statistics.median(p[0] for p in pairs)
    baseline = statistics.median(p[1] for p in pairs)
    verdict = "met" if ours <= GOAL_S else "missed"
    print(f"python app.py until /config serves: {ours:.2f} s (goal <= {GOAL_S:.0f} s: {verdict}); "
          f"baseline with gradio's stub writer on: {baseline:.2f} s; median of {args.starts} [{load()}]")
    print("where the time goes (one in-process start):")
    code = STAGES.replace("PORT", str(free_port()))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "0", "PYTHONPATH": str(REPO)}
    subprocess.run([sys.executable, "-c", code], cwd=REPO, env=env, check=True)


if __name__ == "__main__":
    main()
