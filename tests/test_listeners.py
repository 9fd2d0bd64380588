"""Who holds a TCP port: found from /proc for a real listening socket of this process."""

import os
import socket

from tljh.system import listeners


def test_the_process_holding_a_port_is_named():
    with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as s:
        s.bind(("::", 0))
        s.listen()
        port = s.getsockname()[1]
        holders = listeners.holders(port)
        assert [h.pid for h in holders] == [os.getpid()]
        assert "python" in holders[0].command and f"pid {os.getpid()}" in holders[0].describe()
    assert listeners.holders(port) == []
