"""The replay viewer: a static HTML/JS page (this folder) and a tiny local server for it.

    python -m metta_lightning replay train_dir/run/replays/              # every *.json.z in a folder
    python -m metta_lightning replay s3://bucket/run/replays/game0_episode3.json.z --port 8000
    python -m metta_lightning.viewer path/to/replay.json.z --no-browser

The server binds 127.0.0.1 (only this machine can see it), serves the page, `api/info` (the mode: the
page is also the live view of `play`, see play.py), `api/replays` (the list) and `replays/<i>` (the
compressed bytes of replay i, read through fsspec, so any URL works). The page
decompresses the replay in the browser (`DecompressionStream("deflate")`). The page also works without
the server: open `index.html` from disk and pick a file, or `index.html?replay=<url>` for any URL that
allows cross-origin reads.
"""

from __future__ import annotations

import errno
import json
import os
import sys
import threading
import webbrowser
import zlib
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterable

import fsspec

# One error class for replays across the project: envs.replay.load raises it too (a ValueError).
from envs.replay import ReplayError

__all__ = ["ReplayError", "ReplayServer", "STATIC_DIR", "find_replays", "check_replay", "serve", "main"]

STATIC_DIR = Path(__file__).resolve().parent
STATIC_FILES = {"index.html": "text/html; charset=utf-8", "viewer.js": "text/javascript; charset=utf-8",
                "viewer.css": "text/css; charset=utf-8"}
REPLAY_SUFFIXES = (".json.z", ".json")


def find_replays(sources: Iterable[str]) -> list[str]:
    """Expand each source (a replay file, or a folder searched recursively for `*.json.z`, on any fsspec URL)
    into replay URLs."""
    found: list[str] = []
    for src in sources:
        src = str(src)
        try:
            fs, path = fsspec.core.url_to_fs(src)
        except (ValueError, ImportError) as e:
            raise ReplayError(f"{src}: {e}") from None
        try:
            if fs.isdir(path):
                # recursive; only *.json.z, so profiler traces (*.json) in a run folder are not taken for replays
                names = sorted(p for p in fs.find(path) if p.endswith(".json.z"))
                if not names:
                    raise ReplayError(f"{src}: no replays (*.json.z) in this folder or below")
                found.extend(fs.unstrip_protocol(p) if "://" in src else p for p in names)
            elif fs.exists(path):
                found.append(src)
            else:
                raise ReplayError(f"{src}: replay not found")
        except ReplayError:
            raise
        except Exception as e:  # noqa: BLE001 - network/permission errors get the URI in the message
            raise ReplayError(f"{src}: cannot read: {type(e).__name__}: {e}") from None
    if not found:
        raise ReplayError("no replay given")
    return found


def read_bytes(uri: str) -> bytes:
    try:
        with fsspec.open(uri, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise ReplayError(f"{uri}: replay not found") from None
    except Exception as e:  # noqa: BLE001
        raise ReplayError(f"{uri}: cannot read: {type(e).__name__}: {e}") from None


def check_replay(uri: str, data: bytes | None = None) -> dict:
    """Decode and sanity-check one replay; raises `ReplayError` naming the problem. Returns a summary."""
    data = read_bytes(uri) if data is None else data
    text = data
    if not data.lstrip()[:1] == b"{":
        try:
            text = zlib.decompress(data)
        except zlib.error as e:
            raise ReplayError(f"{uri}: not a replay: cannot decompress ({e}); expected zlib-compressed JSON "
                              "(*.json.z)") from None
    try:
        replay = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ReplayError(f"{uri}: not a replay: invalid JSON ({e})") from None
    missing = [k for k in ("map_size", "objects", "max_steps") if not isinstance(replay, dict) or k not in replay]
    if missing:
        raise ReplayError(f"{uri}: not a MettaGrid replay (missing {', '.join(missing)})")
    return {"map_size": replay["map_size"], "num_agents": replay.get("num_agents"),
            "max_steps": replay["max_steps"], "num_objects": len(replay["objects"])}


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"

    def log_message(self, fmt: str, *args) -> None:  # quiet unless asked
        if self.server.verbose:
            super().log_message(fmt, *args)

    def _send(self, status: int, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET()

    def do_POST(self) -> None:  # noqa: N802
        self._send(HTTPStatus.METHOD_NOT_ALLOWED, b"the replay viewer only serves GET requests", "text/plain")

    def do_GET(self) -> None:  # noqa: N802
        path = self.path.split("?", 1)[0].lstrip("/") or "index.html"
        if path in STATIC_FILES:
            return self._send(HTTPStatus.OK, (STATIC_DIR / path).read_bytes(), STATIC_FILES[path])
        if path == "favicon.ico":
            return self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        if path == "api/info":  # the page asks which mode it is in (the play server answers "play")
            return self._send(HTTPStatus.OK, json.dumps({"mode": "replay", "replays": len(self.server.replays)})
                              .encode(), "application/json")
        if path == "api/replays":
            listing = [{"name": _short_name(u, self.server.replays), "url": f"replays/{i}", "uri": u}
                       for i, u in enumerate(self.server.replays)]
            return self._send(HTTPStatus.OK, json.dumps(listing).encode(), "application/json")
        if path.startswith("replays/"):
            try:
                uri = self.server.replays[int(path.split("/", 1)[1])]
            except (ValueError, IndexError):
                return self._send(HTTPStatus.NOT_FOUND, b"no such replay", "text/plain")
            try:
                data = read_bytes(uri)
            except ReplayError as e:
                return self._send(HTTPStatus.NOT_FOUND, str(e).encode(), "text/plain")
            return self._send(HTTPStatus.OK, data, "application/octet-stream")
        self._send(HTTPStatus.NOT_FOUND, b"not found", "text/plain")


def _short_name(uri: str, all_uris: list[str]) -> str:
    """The replay's path below the folder common to all served replays (its file name if only one)."""
    if len(all_uris) == 1:
        return uri.rstrip("/").rsplit("/", 1)[-1]
    common = os.path.commonpath([u.split("://", 1)[-1] for u in all_uris])
    return uri.split("://", 1)[-1][len(common):].lstrip("/") or uri


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    replays: list[str]
    verbose: bool = False


class ReplayServer:
    """Serves the viewer and `replays` on `host:port` (port 0 picks a free one) in a background thread."""

    def __init__(self, replays: list[str], host: str = "127.0.0.1", port: int = 0, verbose: bool = False):
        self.httpd = bind_http_server(_Server, _Handler, host, port, ReplayError)
        self.httpd.replays = list(replays)
        self.httpd.verbose = verbose
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "ReplayServer":
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="replay-viewer", daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self.thread is not None:
            self.thread.join(timeout=5)

    def __enter__(self) -> "ReplayServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(sources: Iterable[str], host: str = "127.0.0.1", port: int = 0, open_browser: bool = True,
          block: bool = True, check: bool = True) -> ReplayServer:
    """Find and check the replays, start the server, print (and open) the URL; block until Ctrl-C."""
    replays = find_replays(sources)
    if check:
        check_replay(replays[0])
    server = ReplayServer(replays, host=host, port=port).start()
    url = server.url
    print(f"Replay viewer: {url}  ({len(replays)} replay{'s' if len(replays) != 1 else ''}; Ctrl-C to stop)",
          flush=True)
    if open_browser:
        open_in_browser(url)
    if block:
        serve_until_interrupted(server)
    return server


def bind_http_server(server_cls, handler_cls, host: str, port: int, error_cls: type[Exception]):
    """`server_cls((host, port), handler_cls)`, or `error_cls` saying why not (a port in use names --port)."""
    try:
        return server_cls((host, port), handler_cls)
    except OSError as e:
        if e.errno == errno.EADDRINUSE:
            raise error_cls(f"port {port} on {host} is in use (another server?); pick another with --port, "
                            "or --port 0 for any free one") from None
        raise error_cls(f"cannot listen on {host}:{port}: {e}") from None


def open_in_browser(url: str) -> None:
    """Open `url` in a browser where there is a display (elsewhere the printed URL is enough)."""
    if os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY") or sys.platform in ("darwin", "win32"):
        try:
            webbrowser.open(url)
        except Exception:  # noqa: BLE001 - printing the URL is enough
            pass


def serve_until_interrupted(server) -> None:
    """Wait while `server.thread` runs (Ctrl-C ends the wait), then `server.stop()`."""
    try:
        while server.thread.is_alive():
            server.thread.join(timeout=0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


def main(argv: list[str] | None = None) -> int:
    """`python -m metta_lightning.viewer ...`: the `replay` command (`metta_lightning.commands.replay`)."""
    from ..commands import run_command

    return run_command(["replay", *(sys.argv[1:] if argv is None else argv)])
