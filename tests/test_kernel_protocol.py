"""The kernel websocket's two formats (tljh.loadtest.kernel_protocol) against their byte layouts, and the
connection's choice between them against a websocket server that accepts v1 or not."""

import json
import struct

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

from tljh.loadtest import kernel_protocol as kp

HEADER = {"msg_id": "m1", "msg_type": "comm_msg", "session": "s1", "username": "", "date": "", "version": "5.3"}
# Non-ASCII in a part, and buffers with bytes that are not UTF-8.
MESSAGE = {"channel": "shell", "header": HEADER, "parent_header": {"msg_id": "p0"}, "metadata": {"k": 1},
           "content": {"data": {"text": "Grüße, 世界"}}, "buffers": [b"\x00\xff\x10", b"", b"raw"]}


def test_v1_frame_is_laid_out_as_jupyter_server_reads_it():
    frame = kp.encode_v1(MESSAGE)
    (count,) = struct.unpack_from("<Q", frame)
    # channel, four JSON parts, three buffers: eight pieces, nine offsets (the last is the frame's end)
    assert count == 9
    offsets = struct.unpack_from("<9Q", frame, 8)
    assert offsets[0] == 8 + 8 * 9 and offsets[-1] == len(frame)
    pieces = [frame[a:b] for a, b in zip(offsets, offsets[1:])]
    assert pieces[0] == b"shell"
    assert [json.loads(p) for p in pieces[1:5]] == [MESSAGE[k] for k in ("header", "parent_header", "metadata",
                                                                         "content")]
    assert "Grüße, 世界".encode() in pieces[4]  # UTF-8, as JupyterLab's TextEncoder writes it
    assert pieces[5:] == MESSAGE["buffers"]


def test_a_v1_frame_built_by_hand_decodes():
    parts = [b"iopub", b'{"msg_type": "status", "msg_id": "x"}', b'{"msg_id": "m1"}', b"{}",
             '{"execution_state": "idle", "note": "été"}'.encode(), b"\x01\x02"]
    offsets = [8 * (len(parts) + 2)]
    for part in parts:
        offsets.append(offsets[-1] + len(part))
    frame = len(offsets).to_bytes(8, "little") + b"".join(o.to_bytes(8, "little") for o in offsets) + b"".join(parts)
    assert kp.decode_v1(frame) == {
        "channel": "iopub", "header": {"msg_type": "status", "msg_id": "x"}, "parent_header": {"msg_id": "m1"},
        "metadata": {}, "content": {"execution_state": "idle", "note": "été"}, "buffers": [b"\x01\x02"]}


@pytest.mark.parametrize("buffers", [[], MESSAGE["buffers"]])
def test_round_trips(buffers):
    msg = {**MESSAGE, "buffers": buffers}
    assert kp.decode_v1(kp.encode_v1(msg)) == msg
    assert kp.decode_json(kp.encode_json(msg)) == msg


def test_older_format_text_frames_and_binary_frames_for_buffers():
    text = kp.encode_json({**MESSAGE, "buffers": []})
    assert isinstance(text, str) and json.loads(text)["content"] == MESSAGE["content"]
    frame = kp.encode_json(MESSAGE)
    # big-endian 32-bit: the number of pieces (the JSON, then each buffer), then where each piece starts
    (count,) = struct.unpack_from(">I", frame)
    assert count == 4
    offsets = [*struct.unpack_from(">4I", frame, 4), len(frame)]
    assert offsets[0] == 4 * 5
    pieces = [frame[a:b] for a, b in zip(offsets, offsets[1:])]
    assert json.loads(pieces[0])["content"] == MESSAGE["content"] and "buffers" not in json.loads(pieces[0])
    assert pieces[1:] == MESSAGE["buffers"]


@pytest.mark.parametrize("frame", [
    b"",
    b"\x01\x00\x00",
    (2).to_bytes(8, "little") + (24).to_bytes(8, "little") + (24).to_bytes(8, "little"),  # too few parts
    (6).to_bytes(8, "little") * 3,  # offsets beyond the frame
    kp.encode_v1(MESSAGE)[:-1],  # cut short
])
def test_malformed_v1_frames_are_value_errors(frame):
    with pytest.raises(ValueError):
        kp.decode_v1(frame)


def test_malformed_binary_frames_of_the_older_format_are_value_errors():
    for frame in (b"", b"\x00\x00\x00\x09", kp.encode_json(MESSAGE)[:10]):
        with pytest.raises(ValueError):
            kp.decode_json(frame)


# ---- the connection: v1 when the server accepts it, JSON frames when it does not


async def kernel_server(accept_v1):
    """A kernel websocket that answers kernel_info and execute requests in the format it agreed on."""
    seen = {"frames": [], "protocols_asked": None}

    async def channels(request):
        seen["protocols_asked"] = request.headers.get("Sec-WebSocket-Protocol")
        ws = web.WebSocketResponse(protocols=(kp.V1,) if accept_v1 else ())
        await ws.prepare(request)
        v1 = ws.ws_protocol == kp.V1
        async for frame in ws:
            seen["frames"].append(frame.type)
            msg = kp.decode_v1(frame.data) if v1 else kp.decode_json(frame.data)

            async def send(msg_type, content, channel):
                out = {"channel": channel, "header": {"msg_type": msg_type, "msg_id": msg_type},
                       "parent_header": msg["header"], "metadata": {}, "content": content, "buffers": []}
                await (ws.send_bytes(kp.encode_v1(out)) if v1 else ws.send_str(kp.encode_json(out)))

            if msg["header"]["msg_type"] == "kernel_info_request":
                await send("kernel_info_reply", {"status": "ok"}, "shell")
            else:
                await send("status", {"execution_state": "busy"}, "iopub")
                await send("execute_result", {"data": {"text/plain": msg["content"]["code"]}}, "iopub")
                await send("execute_reply", {"status": "ok"}, "shell")
                await send("status", {"execution_state": "idle"}, "iopub")
        return ws

    app = web.Application()
    app.router.add_get("/channels", channels)
    server = TestServer(app, host="127.0.0.1")
    await server.start_server()
    return server, seen


@pytest.mark.asyncio
@pytest.mark.parametrize("accept_v1", [True, False])
async def test_the_connection_asks_for_v1_and_falls_back_to_json(accept_v1):
    server, seen = await kernel_server(accept_v1)
    try:
        async with aiohttp.ClientSession() as http:
            kernel = await kp.KernelConnection.open(http, str(server.make_url("/channels")))
            assert kernel.protocol == (kp.V1 if accept_v1 else kp.JSON)
            info = await kernel.request("kernel_info_request", {}, "kernel_info_reply")
            reply = await kernel.execute("'Grüße'")
            await kernel.close()
    finally:
        await server.close()
    assert seen["protocols_asked"] == kp.V1
    assert info["content"] == {"status": "ok"} and reply["content"] == {"status": "ok"}
    assert reply["header"]["msg_type"] == "execute_reply"
    assert seen["frames"][:2] == [WSMsgType.BINARY if accept_v1 else WSMsgType.TEXT] * 2


@pytest.mark.asyncio
async def test_json_frames_when_asked_for_no_subprotocol():
    server, seen = await kernel_server(accept_v1=True)
    try:
        async with aiohttp.ClientSession() as http:
            kernel = await kp.KernelConnection.open(http, str(server.make_url("/channels")), protocols=())
            assert kernel.protocol == kp.JSON
            assert (await kernel.execute("1+1"))["content"]["status"] == "ok"
            await kernel.close()
    finally:
        await server.close()
    assert seen["protocols_asked"] is None and seen["frames"][0] == WSMsgType.TEXT
