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

# A person in line is told a new place at most this often (their turn at once). Every change in the line wakes
# everyone in it, and each place told is a progress event the hub sends through the proxy to a spawn page: told
# at every change, 200 people arriving over a minute made 29,661 events and the hub spent 0.70 CPU-s per person
# (0.29 on a start alone; `tljh loadtest`, benchmarks/loadtest.py running, docs/explanation/performance.md).
PLACE_UPDATE_SECONDS = 3.0


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
        self._places = None  # key -> place in line, computed once per change (state() is asked per person)

    def _notify(self):
        self._places = None
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
            if self._places is None:
                self._places = {k: i for i, k in enumerate(self.waiting)}
            return "waiting", self._places[key]
        return None, 0

    async def places(self, key, interval=PLACE_UPDATE_SECONDS):
        """What to tell ``key``'s person, as it changes: ``("waiting", how many before it)`` when that differs
        from what was told last, at most every ``interval`` seconds (changes in between are told together),
        then ``("starting", 0)`` as soon as the turn comes, which ends it. Before ``key`` joins, nothing."""
        told, quiet_until = None, 0.0
        while True:
            change = self._changed  # taken before the state is read: a change from here on sets it
            state, before = self.state(key)
            if state == "starting":
                yield state, before
                return
            now = (len(self.running), before)
            if state == "waiting" and now != told:
                yield state, before
                # What was told is what was read before the yield: the line may move while the caller works.
                told, quiet_until = now, time.monotonic() + interval
            await change.wait()
            while (left := quiet_until - time.monotonic()) > 0:
                change = self._changed
                if self.state(key)[0] != "waiting":
                    break
                try:
                    await asyncio.wait_for(change.wait(), left)
                except asyncio.TimeoutError:
                    break

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
