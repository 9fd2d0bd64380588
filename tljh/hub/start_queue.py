"""Servers start a few at a time; the others wait their turn, in the order they asked.

A server's start is mostly CPU (Python imports, Jupyter Server's extensions). When a class logs in at once on a
small machine, starting every server together makes each start take as long as all of them (measured: 100 at
once on 2 cores, p95 67 s, and JupyterHub gave up on 11 after its 60 s start timeout). Started a few at a time,
each start takes about as long as it does alone, the first people are working within seconds, and the
last one is running no later than before. Waiting people see their place in line on the spawn page.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time


def parallel_for(setting, cpus=None):
    """Servers starting at once for the ``hub.concurrent_starts`` setting: ``auto`` = one per CPU. Measured with
    `tljh loadtest` (100 people within 10 s, 2 CPUs, quiet host, docs/explanation/performance.md): CPUs + 1 gave
    a start (its turn -> JupyterLab) p95 6.45 s and everyone running after 157.5 s; one per CPU 4.69 s and
    164.1 s — each person's own start a quarter shorter, the class done within 5 % of the time."""
    if setting in (None, "auto"):
        cpus = cpus or len(os.sched_getaffinity(0))
        return cpus
    return int(setting)


class StartQueue:
    def __init__(self, parallel):
        self.parallel = parallel
        self.running = set()
        self.waiting = collections.OrderedDict()  # key -> future set when its turn comes
        self.waited = {}  # key -> seconds it waited for its turn (while it starts)
        self._joined = {}
        self._changed = asyncio.Event()

    def _notify(self):
        self._changed.set()
        self._changed = asyncio.Event()

    async def changed(self):
        """Wait until anyone's place in line changes."""
        await self._changed.wait()

    def state(self, key):
        """("starting", 0), ("waiting", how many wait before it) or (None, 0) when the key is in neither."""
        if key in self.running:
            return "starting", 0
        if key in self.waiting:
            return "waiting", list(self.waiting).index(key)
        return None, 0

    async def acquire(self, key):
        """Return when ``key`` may start. Cancelling the wait leaves the line."""
        if key in self.running:
            return
        if len(self.running) < self.parallel and not self.waiting:
            self.running.add(key)
            self.waited[key] = 0.0
            self._notify()
            return
        self._joined[key] = time.monotonic()
        turn = asyncio.get_running_loop().create_future()
        self.waiting[key] = turn
        self._notify()
        try:
            await turn
        except BaseException:
            self._joined.pop(key, None)
            if self.waiting.pop(key, None) is None and turn.done() and not turn.cancelled():
                self.release(key)  # the turn came as the wait was cancelled: pass it on
            self._notify()
            raise

    def release(self, key):
        self.running.discard(key)
        self.waited.pop(key, None)
        while self.waiting and len(self.running) < self.parallel:
            next_key, turn = self.waiting.popitem(last=False)
            self.running.add(next_key)
            self.waited[next_key] = time.monotonic() - self._joined.pop(next_key, time.monotonic())
            if not turn.done():
                turn.set_result(None)
        self._notify()
