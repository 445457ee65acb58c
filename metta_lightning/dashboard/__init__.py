"""A local web dashboard over run folders: runs, learning curves, scorecards, checkpoints and replays.

    python -m metta_lightning dashboard train_dir                      # a data dir (every run in it)
    python -m metta_lightning dashboard train_dir/arena s3://bucket/metta --port 8080

A Starlette app served by uvicorn on 127.0.0.1. The page (`static/`, plain JavaScript, plots by the
vendored uPlot, nothing fetched from the internet) polls the JSON API below every `--refresh` seconds,
so curves grow and statuses change while a run trains:

    api/runs                      runs: name, status, agent-steps, SPS, last checkpoint, last update, config
    api/curves?metric=M&run=ID..  each run's (x, y) points of metric M (x: agent steps when logged)
    api/scorecard?metric=reward   every eval database merged: policy x simulation, cross-play, ratings
    api/checkpoints?metric=...    each run's checkpoints with their evaluation scores
    api/replay/<scheme>/<path>    a replay's bytes (only files inside the served folders)
    viewer/                       the replay viewer's own page (`metta_lightning.viewer`), opened with
                                  `viewer/?replay=<api/replay/...>` (the viewer's URL interface)

Every error (a folder that cannot be listed, a damaged log or database) is part of the JSON answer and
shown where its data would be; the server itself answers whatever the files hold.
"""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

__all__ = ["create_app", "DashboardServer", "STATIC_DIR"]

STATIC_DIR = Path(__file__).resolve().parent / "static"
_VIEWER_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
                 ".css": "text/css; charset=utf-8", ".png": "image/png", ".svg": "image/svg+xml"}


def _uri_from_link(scheme: str, rest: str) -> str:
    return "/" + rest if scheme == "file" else f"{scheme}://{rest}"


def create_app(sources: list[str], refresh_s: float = 5.0, data=None):
    """The Starlette app over `sources` (folders or fsspec URIs)."""
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import Request
    from starlette.responses import FileResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from ..viewer import STATIC_DIR as VIEWER_DIR
    from .data import DashboardData, _describe

    data = data or DashboardData(sources, listing_ttl_s=min(2.0, refresh_s))

    async def index(request: Request) -> Response:
        return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def config(request: Request) -> Response:
        return JSONResponse({"sources": data.source_uris, "refresh_s": refresh_s})

    def guarded(fn):
        """Run a blocking reader in the thread pool; an unexpected failure is still a JSON answer."""
        async def endpoint(request: Request) -> Response:
            try:
                return JSONResponse(await run_in_threadpool(fn, request))
            except Exception as e:  # noqa: BLE001 - the page shows it in place
                return JSONResponse({"error": _describe(e)}, status_code=500)
        return endpoint

    def runs(request: Request) -> dict:
        return data.runs()

    def curves(request: Request) -> dict:
        metric = request.query_params.get("metric", "overview/reward")
        return data.curves(request.query_params.getlist("run"), metric)

    def scorecard(request: Request) -> dict:
        return data.scorecard(request.query_params.get("metric", "reward"))

    def checkpoints(request: Request) -> dict:
        return data.checkpoints(request.query_params.get("metric", "reward"))

    async def replay(request: Request) -> Response:
        uri = _uri_from_link(request.path_params["scheme"], request.path_params["rest"])
        if not await run_in_threadpool(data.replay_allowed, uri):
            return Response(f"{uri}: not inside a served folder", status_code=403, media_type="text/plain")

        def read() -> bytes:
            import fsspec

            with fsspec.open(uri, "rb") as f:
                return f.read()
        try:
            body = await run_in_threadpool(read)
        except FileNotFoundError:
            return Response(f"{uri}: replay not found", status_code=404, media_type="text/plain")
        except Exception as e:  # noqa: BLE001
            return Response(f"{uri}: cannot read: {_describe(e)}", status_code=502, media_type="text/plain")
        return Response(body, media_type="application/octet-stream", headers={"Cache-Control": "no-store"})

    async def viewer_file(request: Request) -> Response:
        name = request.path_params.get("name") or "index.html"
        path = VIEWER_DIR / name
        if "/" in name or path.suffix not in _VIEWER_TYPES or not path.is_file():
            return Response("not found", status_code=404, media_type="text/plain")
        return FileResponse(path, media_type=_VIEWER_TYPES[path.suffix], headers={"Cache-Control": "no-store"})

    async def viewer_list(request: Request) -> Response:
        # The viewer asks its server for a replay list; here the replay comes from `?replay=` alone.
        return JSONResponse([])

    async def favicon(request: Request) -> Response:
        return Response(b"", status_code=204)

    routes = [
        Route("/", index),
        Route("/favicon.ico", favicon),
        Route("/api/config", config),
        Route("/api/runs", guarded(runs)),
        Route("/api/curves", guarded(curves)),
        Route("/api/scorecard", guarded(scorecard)),
        Route("/api/checkpoints", guarded(checkpoints)),
        Route("/api/replay/{scheme}/{rest:path}", replay),
        Route("/viewer/api/replays", viewer_list),
        Route("/viewer/", viewer_file),
        Route("/viewer/{name}", viewer_file),
        Mount("/static", StaticFiles(directory=STATIC_DIR), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        data.close()  # the local copies of remote files

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.data = data
    return app


class DashboardServer:
    """uvicorn serving `create_app(sources)` on `host:port` (0: a free port) in a background thread."""

    def __init__(self, sources: list[str], host: str = "127.0.0.1", port: int = 0, refresh_s: float = 5.0,
                 log_level: str = "warning") -> None:
        import socket

        import uvicorn

        self.app = create_app(sources, refresh_s=refresh_s)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))  # bound here so the port is known (and taken) before serving
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level=log_level, lifespan="on"))
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self.sock.getsockname()[:2]
        return f"http://{host}:{port}/"

    def start(self) -> "DashboardServer":
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]},
                                       name="dashboard", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 20
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"dashboard server did not start on {self.url}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=10)
        self.sock.close()

    def __enter__(self) -> "DashboardServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
