"""Clients for Caddy's admin API over a unix socket.

- :class:`AsyncCaddyAdmin` for the hub (aiohttp, which JupyterHub already
  depends on): no blocking on the event loop.
- :class:`CaddyAdmin` (standard library only) for the CLI and the installer.

Both raise :class:`CaddyAdminError` with Caddy's own one-line reason.  Writes can
carry ``If-Match: <Etag>`` (from a GET of the same path): Caddy answers 412
(:class:`CaddyConfigChanged`) if the config changed underneath.

Every config change makes Caddy replace its admin server; a connection the old
one accepted but had not read yet is closed without an answer. Such a request
was never handled, so both clients send it again (``DISCONNECT_RETRIES`` times):
under many concurrent route changes (a class starting together) this happens.
Repeating is safe for every request made here: GETs, ``/load`` of a whole
config, and writes guarded by an Etag (a repeat of an applied write gets 412).
"""

import asyncio
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


class CaddyConfigChanged(CaddyAdminError):
    """412: the config changed since the Etag was read; read it again and retry."""


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
    cls = CaddyConfigChanged if status == 412 else CaddyAdminError
    return cls(f"Caddy admin {method} {path}: {reason}", status=status)


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


class AsyncCaddyAdmin:
    """Async admin client for one Caddy process (used inside the hub)."""

    def __init__(self, socket_path, timeout=DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = timeout

    async def request(self, method, path, body=None, etag=None):
        """(status, headers, decoded JSON body); raises CaddyAdminError on errors.

        One connection per request: a pooled keep-alive connection that Caddy
        closed meanwhile would fail the next change.
        """
        import aiohttp

        headers = {"Content-Type": "application/json"}
        if etag:
            headers["If-Match"] = etag
        data = json.dumps(body) if body is not None else None
        timeout = aiohttp.ClientTimeout(total=self.timeout)
        for attempt in range(DISCONNECT_RETRIES + 1):
            connector = aiohttp.UnixConnector(path=self.socket_path, force_close=True)
            try:
                async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
                    async with session.request(method, "http://localhost" + path, data=data,
                                               headers=headers) as resp:
                        text = await resp.text()
                break
            except aiohttp.ClientConnectorError as e:
                raise CaddyNotRunning(
                    f"Caddy admin socket {self.socket_path}: {e.os_error.strerror or e} (is the proxy running?)"
                ) from e
            except aiohttp.ClientError as e:
                unanswered = isinstance(e, aiohttp.ServerDisconnectedError) or _disconnected(e)
                if attempt == DISCONNECT_RETRIES or not unanswered:
                    raise CaddyAdminError(f"Caddy admin socket {self.socket_path}: {e}") from e
                await asyncio.sleep(_retry_delay(attempt))
            except asyncio.TimeoutError as e:
                raise CaddyAdminError(
                    f"Caddy admin socket {self.socket_path}: no answer within {self.timeout}s"
                ) from e
        if resp.status >= 400:
            raise _error_from_response(method, path, resp.status, text)
        return resp.status, resp.headers, _decode(text)

    async def get(self, path):
        """(value, Etag) of the config at path, e.g. /config/apps/http/servers/router/routes."""
        _, headers, value = await self.request("GET", path)
        return value, headers.get("Etag")

    async def load(self, config):
        """Replace the whole config (Caddy rolls back if the new one fails)."""
        await self.request("POST", "/load", config)

    async def patch(self, path, value, etag=None):
        """Replace the existing value at path."""
        await self.request("PATCH", path, value, etag=etag)

    async def put(self, path, value, etag=None):
        """Create the value at path (insert at an array index)."""
        await self.request("PUT", path, value, etag=etag)

    async def delete(self, path, etag=None):
        await self.request("DELETE", path, etag=etag)


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
    """Blocking admin client (standard library only) for the CLI and installer."""

    def __init__(self, socket_path, timeout=DEFAULT_TIMEOUT):
        self.socket_path = socket_path
        self.timeout = timeout

    def request(self, method, path, body=None, etag=None):
        """(status, headers, decoded JSON body); raises CaddyAdminError on errors."""
        headers = {"Content-Type": "application/json", "Host": "localhost"}
        if etag:
            headers["If-Match"] = etag
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
        return resp.status, dict(resp.getheaders()), _decode(text)

    def get(self, path):
        _, headers, value = self.request("GET", path)
        return value, headers.get("Etag")

    def load(self, config):
        self.request("POST", "/load", config)

    def patch(self, path, value, etag=None):
        self.request("PATCH", path, value, etag=etag)

    def put(self, path, value, etag=None):
        self.request("PUT", path, value, etag=etag)

    def delete(self, path, etag=None):
        self.request("DELETE", path, etag=etag)

    def is_running(self):
        try:
            self.request("GET", "/config/")
        except CaddyNotRunning:
            return False
        return True
