"""`tljh status`'s capacity line: measured memory per running server, and what still fits."""

from tljh.cli import capacity
from tljh.system.cgroups import MachineUsage, Usage

MiB = 2**20


class FakeCgroups:
    def __init__(self, servers, used, total):
        self.servers, self.used, self.total = servers, used, total

    def units(self, pattern):
        assert pattern == "jupyter-*.service"
        return {f"jupyter-{i}.service": i for i in range(len(self.servers))}

    def usage(self, path):
        return Usage(self.servers[path], 1.0)

    def machine(self):
        return MachineUsage(self.used, 1.0, self.total)


def test_what_fits_at_the_measured_average_and_at_the_limit():
    c = capacity.measure(limit=512 * MiB, cgroups=FakeCgroups([100 * MiB, 140 * MiB], 1024 * MiB, 4096 * MiB))
    assert (c.running, c.per_server, c.available) == (2, 120 * MiB, 3072 * MiB)
    assert (c.more, c.more_at_limit) == (25, 6)
    assert c.describe() == ("2 servers running, 120 MiB each on average (with their kernels); 25 more fit in "
                            "the 3072 MiB available; 6 more at limits.memory (512 MiB each)")


def test_nothing_running_says_so():
    c = capacity.measure(cgroups=FakeCgroups([], 500 * MiB, 4096 * MiB))
    assert c.more is None
    assert c.describe() == "no server running, nothing to measure yet"


def test_one_server_is_one_server():
    c = capacity.measure(cgroups=FakeCgroups([100 * MiB], 1024 * MiB, 4096 * MiB))
    assert c.describe().startswith("1 server running, 100 MiB (with its kernels); 30 more fit")

