"""The app as a subprocess with ``launch(auth=...)`` users, for tests that call its API with gradio_client.

The e2e fixture waits for ``/gradio_api/info`` to answer 200, which never happens behind a login; here any answer
other than the starting page's 503 means the real server is up.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from tests.e2e.conftest import REPO, START_TIMEOUT_S, RunningApp, free_port

USERS = {"viewer1": "pw1", "annot1": "pw2", "admin1": "pw3"}
AUTH_ENV = {
    "CTLLM_AUTH": ",".join(f"{user}:{password}" for user, password in USERS.items()),
    "CTLLM_ADMINS": "admin1",
    "CTLLM_ANNOTATORS": "annot1",
}


PAIR = {"prompt": "Say hi", "chosen": "Hi!", "rejected": "Go away."}


def data_dir_with_a_pairs_file(tmp: Path) -> Path:
    """``tmp/data`` holding ``incoming.jsonl`` with :data:`PAIR`, a file an admin may import."""
    data_dir = tmp / "data"
    data_dir.mkdir()
    (data_dir / "incoming.jsonl").write_text(json.dumps(PAIR) + "\n", encoding="utf-8")
    return data_dir


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url + "gradio_api/info", timeout=5):
            return True
    except urllib.error.HTTPError as error:
        return error.code != 503
    except OSError:
        return False


def start_hosted_app(tmp: Path, extra_env: dict[str, str] | None = None, data_dir: Path | None = None) -> RunningApp:
    """Start app.py on a free port; ``data_dir`` may be reused to restart over the same data."""
    data_dir = data_dir or tmp / "data"
    port = free_port()
    log_path = tmp / f"app-{port}.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GRADIO_ANALYTICS_ENABLED": "0"}
    env.update(extra_env or {})
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, str(REPO / "app.py"), "--data-dir", str(data_dir), "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    app = RunningApp(f"http://127.0.0.1:{port}/", data_dir, log_path, process)
    deadline = time.monotonic() + START_TIMEOUT_S
    while not _answers(app.url):
        if process.poll() is not None:
            raise RuntimeError(f"the app exited with {process.returncode}:\n{app.log()[-4000:]}")
        if time.monotonic() > deadline:
            process.kill()
            raise TimeoutError(f"the app did not answer within {START_TIMEOUT_S} s:\n{app.log()[-4000:]}")
        time.sleep(0.3)
    return app
