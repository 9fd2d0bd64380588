"""A client for Caddy's admin API over a unix socket (standard library only).

Only root uses it: `tljh-config reload proxy`, the installer and `tljh status`, through the socket
systemd makes for the proxy (root-only). Route changes never go through it (tljh.proxy.route_table).
Errors are :class:`CaddyAdminError` with Caddy's own one-line reason.

Every config change makes Caddy replace its admin server; a connection the old one accepted but had not
read yet is closed without an answer. Such a request was never handled, so the client sends it again
(``DISCONNECT_RETRIES`` times). Repeating is safe for every request made here: GETs and ``/load`` of a
whole config.
"""

import errno
import http.client
import json
import socket
import time

DEFAULT_TIMEOUT = 30
DISCONNECT_RETRIES = 5


class CaddyAdminError(Exception):
    """Caddy's admin API refused a request or could not be reached."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


class CaddyNotRunning(CaddyAdminError):
    """Nothing answers on the admin socket."""


def _error_from_response(method, path, status, body):
    reason = body.strip()
    try:
        reason = json.loads(body).get("error", reason)
    except (ValueError, AttributeError):
        pass
    # Caddy's errors nest ("loading new config: ...: json: unknown field"): keep one line.
    reason = " ".join(str(reason).split()) or f"HTTP {status}"
    return CaddyAdminError(f"Caddy admin {method} {path}: {reason}", status=status)


def _disconnected(error):
    """Closed by the server before it answered, as opposed to any other failure: a reset or broken
    pipe, possibly as the cause of the error a client library raises."""
    while error is not None:
        if isinstance(error, (ConnectionResetError, BrokenPipeError)):  # incl. http.client.RemoteDisconnected
            return True
        if getattr(error, "errno", None) in (errno.ECONNRESET, errno.EPIPE):
            return True
        error = error.__cause__
    return False


def _retry_delay(attempt):
    # the replaced admin server is gone within milliseconds; spread repeats a little
    return 0.02 * (attempt + 1)


def _decode(body):
    return json.loads(body) if body.strip() else None


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, socket_path, timeout):
        super().__init__("localhost", timeout=timeout)
        self.socket_path = socket_path

    def connect(self):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.socket_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


class CaddyAdmin:
    """Blocking admin client for one Caddy process."""

    def __init__(self, socket_path, timeout=DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method, path, body=None):
        """(status, decoded JSON body); raises CaddyAdminError on errors."""
        headers = {"Content-Type": "application/json", "Host": "localhost"}
        data = json.dumps(body).encode() if body is not None else None
        for attempt in range(DISCONNECT_RETRIES + 1):
            conn = _UnixHTTPConnection(self.socket_path, self.timeout)
            try:
                conn.request(method, path, body=data, headers=headers)
                resp = conn.getresponse()
                text = resp.read().decode("utf-8", "replace")
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                raise CaddyNotRunning(
                    f"Caddy admin socket {self.socket_path}: {e.strerror or e} (is the proxy running?)"
                ) from e
            except OSError as e:
                if attempt == DISCONNECT_RETRIES or not _disconnected(e):
                    raise CaddyAdminError(f"Caddy admin socket {self.socket_path}: {e}") from e
                time.sleep(_retry_delay(attempt))
            finally:
                conn.close()
        if resp.status >= 400:
            raise _error_from_response(method, path, resp.status, text)
        return resp.status, _decode(text)

    def get(self, path):
        return self.request("GET", path)[1]

    def load(self, config):
        self.request("POST", "/load", config)

    def is_running(self):
        try:
            self.request("GET", "/config/")
        except CaddyNotRunning:
            return False
        return True
