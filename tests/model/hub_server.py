"""A real HTTP server that answers the Hugging Face Hub endpoints huggingface_hub calls.

Point HF_ENDPOINT at ``server.url`` and the real client code runs against it: the model API
(``/api/models/<id>[/revision/<rev>]`` with file sizes and hashes), and ``/<id>/resolve/<rev>/<file>``
with HEAD, GET and byte ranges. Errors look like the Hub's own: an unknown id is 401 with
``X-Error-Code: RepoNotFound``, a gated one 403 with ``GatedRepo``. ``cut(repo, file, after,
times)`` makes the next GETs of a file send ``after`` bytes and then drop the connection.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse

LFS_SUFFIXES = (".safetensors", ".bin", ".gguf")
_API = re.compile(r"^/api/models/(?P<repo>[^/]+/[^/]+)(?:/revision/(?P<rev>[^/]+))?$")
_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)$")


@dataclass
class Repo:
    files: dict[str, bytes]
    gated: bool = False
    commit: str = ""
    served: dict[str, bytes] = field(default_factory=dict)  # bytes sent instead (damage)

    def __post_init__(self) -> None:
        if not self.commit:
            h = hashlib.sha1()
            for name in sorted(self.files):
                h.update(name.encode() + hashlib.sha256(self.files[name]).digest())
            self.commit = h.hexdigest()

    def etag(self, name: str) -> str:
        data = self.files[name]
        if name.endswith(LFS_SUFFIXES):
            return hashlib.sha256(data).hexdigest()
        return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[tuple[str, str, str]] = field(default_factory=list)  # method, path, range
    cuts: dict[tuple[str, str], list[int]] = field(default_factory=dict)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add_folder(self, repo_id: str, folder: Path, gated: bool = False) -> Repo:
        files = {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}
        self.repos[repo_id] = Repo(files, gated)
        return self.repos[repo_id]

    def cut(self, repo_id: str, name: str, after: int, times: int = 1) -> None:
        self.cuts[(repo_id, name)] = [after] * times

    def gets(self, repo_id: str, name: str) -> list[str]:
        """The Range header of every GET of this file ("" for a whole-file GET)."""
        path = f"/{repo_id}/resolve/"
        return [r for m, p, r in self.requests if m == "GET" and p.startswith(path) and p.endswith("/" + name)]  # fmt: skip

    def start(self) -> FakeHub:
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def do_HEAD(self) -> None:
                hub._serve(self, head=True)

            def do_GET(self) -> None:
                hub._serve(self, head=False)

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: object, client_address: object) -> None:
                pass  # a client that hangs up mid-body (a cancelled download) is expected

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()

    # ---- the endpoints ---------------------------------------------------------------------
    def _serve(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlparse(h.path).path)
        self.requests.append(("HEAD" if head else "GET", path, h.headers.get("Range", "")))
        if m := _API.match(path):
            return self._api(h, m["repo"])
        if m := _RESOLVE.match(path):
            return self._resolve(h, m["repo"], m["file"], head)
        _reply(h, 404, b"not found", {"X-Error-Code": "EntryNotFound"})

    def _api(self, h: BaseHTTPRequestHandler, repo_id: str) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _reply(h, 401, b'{"error":"Repository not found"}',
                          {"X-Error-Code": "RepoNotFound", "X-Error-Message": "Repository not found"})  # fmt: skip
        siblings = []
        for name, data in repo.files.items():
            s = {"rfilename": name, "size": len(data), "blobId": repo.etag(name)}
            if name.endswith(LFS_SUFFIXES):
                s["blobId"] = hashlib.sha1(name.encode()).hexdigest()  # the pointer's, not used
                s["lfs"] = {"sha256": repo.etag(name), "size": len(data), "pointerSize": 134}
            siblings.append(s)
        body = {"id": repo_id, "modelId": repo_id, "sha": repo.commit, "private": False,
                "gated": "manual" if repo.gated else False, "siblings": siblings}  # fmt: skip
        _reply(h, 200, json.dumps(body).encode(), {"Content-Type": "application/json"})

    def _resolve(self, h: BaseHTTPRequestHandler, repo_id: str, name: str, head: bool) -> None:
        repo = self.repos.get(repo_id)
        if repo is None:
            return _reply(h, 401, b"", {"X-Error-Code": "RepoNotFound",
                                        "X-Error-Message": "Repository not found"})  # fmt: skip
        if repo.gated:
            msg = f"Access to model {repo_id} is restricted. You must have access to it."
            return _reply(
                h, 403, msg.encode(), {"X-Error-Code": "GatedRepo", "X-Error-Message": msg}
            )
        if name not in repo.files:
            return _reply(h, 404, b"", {"X-Error-Code": "EntryNotFound"})
        data = repo.served.get(name, repo.files[name])
        headers = {"ETag": f'"{repo.etag(name)}"', "X-Repo-Commit": repo.commit,
                   "Accept-Ranges": "bytes"}  # fmt: skip
        if name.endswith(LFS_SUFFIXES):
            headers["X-Linked-Etag"] = f'"{repo.etag(name)}"'
            headers["X-Linked-Size"] = str(len(data))
        start, end, status = 0, len(data) - 1, 200
        if (r := h.headers.get("Range")) and (m := re.match(r"bytes=(\d+)-(\d*)", r)):
            start = int(m[1])
            end = min(int(m[2]), len(data) - 1) if m[2] else len(data) - 1
            status = 206
            headers["Content-Range"] = f"bytes {start}-{end}/{len(data)}"
        body = data[start : end + 1]
        cuts = self.cuts.get((repo_id, name))
        if not head and cuts:
            after = cuts.pop(0)
            headers["Content-Length"] = str(len(body))
            h.send_response(status)
            for k, v in headers.items():
                h.send_header(k, v)
            h.end_headers()
            h.wfile.write(body[: max(0, after - start)])
            h.wfile.flush()
            h.close_connection = True
            return
        _reply(h, status, b"" if head else body, headers, length=len(body))


def _reply(h: BaseHTTPRequestHandler, status: int, body: bytes, headers: dict[str, str],
           length: int | None = None) -> None:  # fmt: skip
    h.send_response(status)
    for k, v in headers.items():
        h.send_header(k, v)
    h.send_header("Content-Length", str(len(body) if length is None else length))
    h.end_headers()
    if body:
        h.wfile.write(body)
