"""A kernel's websocket as Jupyter Server speaks it, and one connection to it.

Two wire formats. JupyterLab 4 asks for the subprotocol ``v1.kernel.websocket.jupyter.org`` when it opens the
websocket and Jupyter Server (2.x) accepts it; every message is then one binary frame::

    n                  unsigned 64-bit little-endian, the number of offsets that follow
    offset[0..n-1]     the same type, from the frame's start: where each part begins, the last one where the
                       last part ends (so offset[0] = 8 * (n + 1))
    channel            UTF-8 ("shell", "iopub", "control", "stdin")
    header, parent_header, metadata, content    UTF-8 JSON, one part each
    buffers...         the message's binary buffers, as they are

The server passes these parts to and from the kernel without decoding their JSON, which is the point of it.
A server that does not accept the subprotocol speaks the older format: one JSON text frame per message (the
channel and the parts as keys), or, for a message with buffers, a binary frame of a big-endian 32-bit count
n, n offsets of the same type, the message's JSON without its buffers, then the buffers.

A decoded message is the usual dict: ``channel``, ``header``, ``parent_header``, ``metadata``, ``content``,
``buffers`` (bytes).

Used by `tljh loadtest`'s simulated people and by ``benchmarks/kernel_cpu.py``.
"""

from __future__ import annotations

import json
import struct
import uuid

import aiohttp

V1 = "v1.kernel.websocket.jupyter.org"
# What the report calls the older format, which has no subprotocol name.
JSON = "json"
PARTS = ("header", "parent_header", "metadata", "content")


class KernelConnectionClosed(ConnectionError):
    pass


def request(msg_type, content, session, channel="shell", buffers=()):
    """A new message to the kernel, as JupyterLab's kernel client makes them."""
    header = {"msg_id": uuid.uuid4().hex, "msg_type": msg_type, "session": session, "username": "", "date": "",
              "version": "5.3"}
    return {"channel": channel, "header": header, "parent_header": {}, "metadata": {}, "content": content,
            "buffers": list(buffers)}


def _json_bytes(value):
    # Non-ASCII stays UTF-8, as JupyterLab's TextEncoder writes it.
    return json.dumps(value, ensure_ascii=False).encode()


def encode_v1(msg):
    pieces = [msg["channel"].encode(), *(_json_bytes(msg[p]) for p in PARTS), *map(bytes, msg.get("buffers", ()))]
    count = len(pieces) + 1
    offsets = [8 * (count + 1)]
    for piece in pieces:
        offsets.append(offsets[-1] + len(piece))
    return struct.pack(f"<{count + 1}Q", count, *offsets) + b"".join(pieces)


def decode_v1(frame):
    frame = bytes(frame)
    if len(frame) < 8:
        raise ValueError(f"v1 kernel frame of {len(frame)} bytes: too short for its offset count")
    (count,) = struct.unpack_from("<Q", frame)
    if not len(PARTS) + 2 <= count <= len(frame) // 8 - 1:
        raise ValueError(f"v1 kernel frame of {len(frame)} bytes says it has {count} offsets")
    offsets = struct.unpack_from(f"<{count}Q", frame, 8)
    if offsets[0] != 8 * (count + 1) or offsets[-1] != len(frame) or list(offsets) != sorted(offsets):
        raise ValueError(f"v1 kernel frame of {len(frame)} bytes has offsets out of place: {list(offsets)}")
    pieces = [frame[a:b] for a, b in zip(offsets, offsets[1:])]
    msg = {"channel": pieces[0].decode()}
    for name, piece in zip(PARTS, pieces[1:]):
        msg[name] = json.loads(piece)
    msg["buffers"] = pieces[1 + len(PARTS):]
    return msg


def encode_json(msg):
    """A text frame; a message with buffers needs the older format's binary frame."""
    body = {"channel": msg["channel"], **{p: msg[p] for p in PARTS}}
    buffers = [bytes(b) for b in msg.get("buffers", ())]
    if not buffers:
        return json.dumps({**body, "buffers": []})
    pieces = [_json_bytes(body), *buffers]
    offsets = [4 * (len(pieces) + 1)]
    for piece in pieces[:-1]:
        offsets.append(offsets[-1] + len(piece))
    return struct.pack(f">{len(pieces) + 1}I", len(pieces), *offsets) + b"".join(pieces)


def decode_json(frame):
    if isinstance(frame, str):
        msg = json.loads(frame)
        msg["buffers"] = [bytes(b) for b in msg.get("buffers") or ()]
        return msg
    frame = bytes(frame)
    (count,) = struct.unpack_from(">I", frame) if len(frame) >= 4 else (0,)
    if not 1 <= count <= len(frame) // 4 - 1:
        raise ValueError(f"binary kernel frame of {len(frame)} bytes says it has {count} parts")
    offsets = [*struct.unpack_from(f">{count}I", frame, 4), len(frame)]
    if offsets[0] != 4 * (count + 1) or offsets != sorted(offsets):
        raise ValueError(f"binary kernel frame of {len(frame)} bytes has offsets out of place: {offsets[:-1]}")
    pieces = [frame[a:b] for a, b in zip(offsets, offsets[1:])]
    msg = json.loads(pieces[0])
    msg["buffers"] = pieces[1:]
    return msg


class KernelConnection:
    """A kernel's websocket (``.../api/kernels/<id>/channels``) in whichever format the server accepted.

    ``protocol`` is ``V1`` or ``JSON``; open() asks for v1 as JupyterLab does, and the server answering without
    it means the older JSON frames."""

    def __init__(self, ws):
        self.ws = ws
        self.protocol = V1 if ws.protocol == V1 else JSON
        self.session = uuid.uuid4().hex

    @classmethod
    async def open(cls, http, url, *, protocols=(V1,), **ws_connect):
        """``protocols=()`` asks for none: the older JSON frames. ws_connect: aiohttp's ws_connect arguments."""
        ws = await http.ws_connect(url, protocols=protocols, heartbeat=None, max_msg_size=0, **ws_connect)
        return cls(ws)

    async def send(self, msg):
        if self.protocol == V1:
            await self.ws.send_bytes(encode_v1(msg))
        else:
            frame = encode_json(msg)
            await (self.ws.send_str(frame) if isinstance(frame, str) else self.ws.send_bytes(frame))

    async def receive(self, timeout=None):
        frame = await self.ws.receive(timeout=timeout)
        if frame.type == aiohttp.WSMsgType.BINARY:
            return decode_v1(frame.data) if self.protocol == V1 else decode_json(frame.data)
        if frame.type == aiohttp.WSMsgType.TEXT and self.protocol == JSON:
            return decode_json(frame.data)
        if frame.type == aiohttp.WSMsgType.TEXT:
            raise ValueError(f"a text frame on a {V1} kernel websocket: {frame.data[:200]!r}")
        raise KernelConnectionClosed(f"kernel websocket closed ({frame.type.name})")

    async def request(self, msg_type, content, reply_type, channel="shell", timeout=None):
        """Send a request; return its reply once the kernel is idle again (either may arrive first), as
        JupyterLab waits. A kernel_info_request is answered without a status of its own to wait for."""
        msg = request(msg_type, content, self.session, channel)
        msg_id = msg["header"]["msg_id"]
        await self.send(msg)
        reply, idle = None, False
        while True:
            msg = await self.receive(timeout)
            if (msg.get("parent_header") or {}).get("msg_id") != msg_id:
                continue
            kind = (msg.get("header") or {}).get("msg_type")
            if kind == reply_type:
                reply = msg
                if msg_type == "kernel_info_request":
                    return reply
            elif kind == "status" and (msg.get("content") or {}).get("execution_state") == "idle":
                idle = True
            if reply and idle:
                return reply

    async def execute(self, code, timeout=None):
        """Run code as a notebook cell does; the execute_reply (its content's status says how it went)."""
        return await self.request("execute_request", {
            "code": code, "silent": False, "store_history": True, "user_expressions": {}, "allow_stdin": False,
            "stop_on_error": True}, "execute_reply", timeout=timeout)

    async def close(self):
        await self.ws.close()
