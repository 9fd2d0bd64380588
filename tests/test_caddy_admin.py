"""The admin client against a unix-socket server that behaves like Caddy replacing its admin server.

On every config change Caddy shuts its old admin server down; a connection that server accepted but had
not read is closed unanswered. The client must send such a request again, and only such a request.
"""

import json
import socket
import threading

import pytest

from tljh.proxy import caddy_admin
from tljh.proxy.caddy_admin import CaddyAdmin, CaddyAdminError, CaddyNotRunning


class FlakyAdminSocket:
    """Closes the first `drop` connections without answering, then answers `status` with a JSON body."""

    def __init__(self, path, drop, status=200):
        self.path = str(path)
        self.drop = drop
        self.status = status
        self.connections = 0
        self.requests = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(self.path)
        self.sock.listen(16)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                self.connections += 1
                if self.connections <= self.drop:
                    continue  # closed unread, as by a replaced admin server
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(4096)
                    if not chunk:
                        break
                    data += chunk
                if b"\r\n\r\n" not in data:
                    continue  # the client went away
                head, rest = data.split(b"\r\n\r\n", 1)
                length = [int(line.split(b":")[1]) for line in head.lower().split(b"\r\n")
                          if line.startswith(b"content-length:")]
                while len(rest) < (length[0] if length else 0):
                    rest += conn.recv(4096)
                self.requests.append(head.split(b"\r\n", 1)[0].decode())
                body = json.dumps({"ok": True} if self.status < 400 else {"error": "boom"}).encode()
                conn.sendall(
                    f"HTTP/1.1 {self.status} X\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body
                )

    def close(self):
        self.sock.close()


@pytest.fixture
def admin_socket(tmp_path):
    servers = []

    def make(drop, status=200):
        server = FlakyAdminSocket(tmp_path / f"admin{len(servers)}.sock", drop, status)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.close()


def test_client_repeats_a_request_the_server_closed_unanswered(admin_socket):
    server = admin_socket(drop=2)
    assert CaddyAdmin(server.path).get("/config/") == {"ok": True}
    assert server.connections == 3
    assert server.requests == ["GET /config/ HTTP/1.1"]


def test_client_gives_up_after_the_retries(admin_socket):
    server = admin_socket(drop=1000)
    with pytest.raises(CaddyAdminError, match="Caddy admin socket .*admin0.sock"):
        CaddyAdmin(server.path).load({"apps": {}})
    assert server.connections == caddy_admin.DISCONNECT_RETRIES + 1


def test_an_answered_error_is_not_repeated(admin_socket):
    server = admin_socket(drop=0, status=500)
    with pytest.raises(CaddyAdminError, match="boom"):
        CaddyAdmin(server.path).load({"apps": {}})
    assert server.connections == 1


def test_nothing_listening(tmp_path):
    admin = CaddyAdmin(str(tmp_path / "none.sock"))
    with pytest.raises(CaddyNotRunning, match="is the proxy running"):
        admin.get("/config/")
    assert admin.is_running() is False
