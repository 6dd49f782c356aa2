"""A "starting…" page on the app's port while gradio is imported and the app is built (seconds on a small CPU).

Standard library only. ``/`` answers 200 with a page that polls until the real app is up, then reloads; every
other path answers 503 with ``Retry-After``. :meth:`StartingServer.stop` frees the port for the real server.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>CT-LLM DPO Studio: starting</title>
<style>
body { font-family: system-ui, sans-serif; display: flex; align-items: center; justify-content: center;
       height: 90vh; color: #333; }
.spinner { width: 36px; height: 36px; border: 4px solid #ddd; border-top-color: #6366f1; border-radius: 50%;
           animation: spin 1s linear infinite; margin: 0 auto 16px; }
@keyframes spin { to { transform: rotate(360deg); } }
</style></head>
<body><div style="text-align:center"><div class="spinner"></div>
<p><b>CT-LLM DPO Studio is starting…</b><br>正在启动……</p>
<p style="color:#777;font-size:0.9em">This page reloads by itself when the app is ready.</p></div>
<script>
(function poll() {
  fetch("gradio_api/info", {cache: "no-store"}).then(function (r) {
    if (r.status !== 503) { location.reload(); } else { setTimeout(poll, 500); }  // 401 with auth on: up
  }).catch(function () { setTimeout(poll, 500); });
})();
</script></body></html>
"""


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server interface
        if self.path.split("?")[0] in ("/", ""):
            body, status = PAGE.encode(), 200
        else:
            body, status = b"starting\n", 503
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8" if status == 200 else "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Retry-After", "1")
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_GET

    def log_message(self, format: str, *args: object) -> None:  # quiet
        return


class StartingServer:
    """Serve the starting page on (host, port) from a daemon thread until :meth:`stop`."""

    def __init__(self, host: str, port: int) -> None:
        ThreadingHTTPServer.allow_reuse_address = True
        self.server = ThreadingHTTPServer((host, port), _Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, name="ctllm-starting", daemon=True)

    def start(self) -> StartingServer:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
