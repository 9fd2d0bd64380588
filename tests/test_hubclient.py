"""The integration tests' hub client (integration-tests/hubclient.py) against a fake server: a kernel that
never answers must fail a test at its timeout, even while the server keeps pinging the websocket."""

import asyncio
import json
import sys
from pathlib import Path

import aiohttp
import pytest
from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "integration-tests"))

from hubclient import HubError, Kernel  # noqa: E402

# Far longer than the timeouts below: reaching it means execute() ignored its own timeout.
HANG = 30


def kernel_server(answer: bool, pings: list):
    """A websocket that pings every 50 ms and answers execute requests only if ``answer``."""

    async def channels(request):
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)

        async def ping():
            while not ws.closed:
                await ws.ping()
                pings.append(1)
                await asyncio.sleep(0.05)

        pinger = asyncio.ensure_future(ping())
        try:
            async for msg in ws:
                if msg.type != WSMsgType.TEXT or not answer:
                    continue
                request_header = json.loads(msg.data)["header"]
                reply = {
                    "parent_header": request_header,
                    "msg_type": "execute_result",
                    "content": {"data": {"text/plain": "42"}},
                }
                await ws.send_str(json.dumps(reply))
        finally:
            pinger.cancel()
        return ws

    app = web.Application()
    app.router.add_get("/channels", channels)
    return TestServer(app, host="127.0.0.1")


async def execute_against(answer: bool, timeout: float, pings: list):
    async with kernel_server(answer, pings) as server:
        async with aiohttp.ClientSession() as session:
            ws = await session.ws_connect(server.make_url("/channels"), heartbeat=None)
            try:
                return await asyncio.wait_for(Kernel(ws).execute("6*7", timeout=timeout), HANG)
            finally:
                await ws.close()


@pytest.mark.asyncio
async def test_a_kernel_that_never_answers_fails_at_the_timeout_while_the_server_pings():
    pings = []
    with pytest.raises(HubError) as e:
        await execute_against(answer=False, timeout=1, pings=pings)
    assert str(e.value) == "no result for '6*7' within 1 s"
    # The server pinged all along (each ping restarted aiohttp's own receive timeout).
    assert len(pings) > 5


@pytest.mark.asyncio
async def test_an_answer_between_the_pings_is_the_result():
    assert await execute_against(answer=True, timeout=5, pings=[]) == "42"
