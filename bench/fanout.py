"""Linnet's config path at fleet scale, on loopback: used by scripts/bench-fanout.sh.

Two modes, stdlib only, bounded in count and time:

  fanout.py pollers PORT TOKEN N LIMIT_S
      N simulated filters, each holding GET /v1/snapshot?version=V&epoch=E&timeout_ms=T on
      its own keep-alive connection, with its own x-linnet-poller id, re-polling at once with
      the version it got. Prints "READY <n>" once each has its first snapshot and holds its
      next poll, "ALL <version> <monotonic s>" when every poller has that version (or a later
      one), and "DONE answers=<a> errors=<e>" at the end. Runs until stdin closes or LIMIT_S.

  fanout.py changes --sidecar PORT --token T --poll-token P --envoys PORT,PORT,...
                    --key KEY --low L --high H [--changes C] [--pollers N] [--run K]
      Starts N pollers (the mode above, as a child process), then makes C weight changes,
      alternating H, L, H, ... on rollout `checkout`. KEY's bucket lies in [L, H) (the script
      finds such a key with `linnet whereis`), so at H it is canary and at L stable: every
      change flips it. For each change it measures, from sending the PUT and from its answer
      (the sidecar commits the change to its store, publishes it, then answers):
        - until every Envoy routes KEY by the new weight, on every worker: each Envoy is probed
          with a fresh connection per request (the kernel spreads new connections over the
          workers), and counts as routing at the first answer of K consecutive answers from
          the new variant (x-served-by). A worker still on the old weight answers a share of
          any K probes, so it goes unnoticed only if K probes in a row miss it (2^-K with two
          workers). Then K more probes per Envoy check it: an old answer there counts as late.
        - until all N pollers have the new version.
      Prints one table: p50, p99 and max of both, and the counts that show nothing was lost.
"""
import argparse
import asyncio
import json
import math
import sys
import time

HOST = "127.0.0.1"
ROLLOUT = "checkout"
# As linnet_core::poll: the headers of the long-poll.
POLLER_HEADER = "x-linnet-poller"
VERSION_HEADER = "x-linnet-version"
EPOCH_HEADER = "x-linnet-epoch"
POLL_TIMEOUT_MS = 30_000
# Connections opened at once while the pollers start, so the listen backlog never overflows.
CONNECT_AT_ONCE = 256
# The longest one change may take to reach everything before it counts as not reached.
CHANGE_LIMIT_S = 5.0
# The width of the table's first column (scripts/bench-fanout.sh prints its rows alike).
NAME_WIDTH = 56


async def read_answer(reader):
    """One HTTP/1.1 answer: (status, {lowercase header: value}, body)."""
    status_line = await reader.readline()
    if not status_line:
        raise ConnectionError("connection closed before an answer")
    status = int(status_line.split()[1])
    headers = {}
    while True:
        line = await reader.readline()
        if line in (b"\r\n", b"\n", b""):
            break
        name, _, value = line.decode("latin-1").partition(":")
        headers[name.strip().lower()] = value.strip()
    length = int(headers.get("content-length", "0"))
    body = await reader.readexactly(length) if length else b""
    return status, headers, body


async def request(port, head, body=b""):
    """One request on a fresh connection, closed after the answer."""
    reader, writer = await asyncio.open_connection(HOST, port)
    try:
        writer.write(head.encode() + body)
        await writer.drain()
        return await read_answer(reader)
    finally:
        writer.close()


# === pollers ===


class Fleet:
    """What the pollers have seen: per version, how many hold it (or a later one)."""

    def __init__(self, n):
        self.n = n
        self.started = 0
        self.holding = {}
        self.answers = 0
        self.errors = 0
        self.all_started = asyncio.Event()

    def first(self):
        self.started += 1
        if self.started == self.n:
            self.all_started.set()

    def moved(self, old, new):
        now = time.monotonic()
        for v in range(old + 1, new + 1):
            self.holding[v] = self.holding.get(v, 0) + 1
            if self.holding[v] == self.n:
                print(f"ALL {v} {now:.6f}", flush=True)
                del self.holding[v]


async def poller(i, port, token, fleet, gate):
    async with gate:
        reader, writer = await asyncio.open_connection(HOST, port)
    version, epoch, first = None, "", True
    try:
        while True:
            query = "" if version is None else f"version={version}&epoch={epoch}&"
            writer.write(
                (
                    f"GET /v1/snapshot?{query}timeout_ms={POLL_TIMEOUT_MS} HTTP/1.1\r\n"
                    f"Host: {HOST}\r\nAuthorization: Bearer {token}\r\n"
                    f"{POLLER_HEADER}: bench-{i:05}\r\n\r\n"
                ).encode()
            )
            await writer.drain()
            if version is not None and first:
                # The second poll is sent: it is held from now on.
                first = False
                fleet.first()
            status, headers, _ = await read_answer(reader)
            fleet.answers += 1
            if status == 304:
                continue
            if status != 200:
                raise RuntimeError(f"poller {i}: status {status}")
            got = int(headers[VERSION_HEADER])
            epoch = headers.get(EPOCH_HEADER, "")
            if version is not None and got > version:
                fleet.moved(version, got)
            version = got
    finally:
        writer.close()


async def run_pollers(port, token, n, limit):
    fleet = Fleet(n)
    gate = asyncio.Semaphore(CONNECT_AT_ONCE)
    tasks = [asyncio.create_task(poller(i, port, token, fleet, gate)) for i in range(n)]
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    started = asyncio.create_task(fleet.all_started.wait())
    done, _ = await asyncio.wait([started, *tasks], timeout=limit, return_when=asyncio.FIRST_COMPLETED)
    if started not in done:
        why = next((repr(t.exception()) for t in done), "time limit")
        raise RuntimeError(f"only {fleet.started} of {n} pollers held a poll: {why}")
    print(f"READY {n}", flush=True)
    # Until stdin closes or the limit passes; a poller that fails counts as an error.
    deadline = loop.time() + limit
    while not stdin_closed.done() and loop.time() < deadline:
        await asyncio.wait([stdin_closed], timeout=0.2)
        for t in tasks:
            if t.done() and not t.cancelled() and t.exception():
                fleet.errors += 1
                print(f"ERROR {t.exception()!r}", file=sys.stderr, flush=True)
        tasks = [t for t in tasks if not t.done()]
    for t in tasks:
        t.cancel()
    print(f"DONE answers={fleet.answers} errors={fleet.errors}", flush=True)


# === changes ===


async def set_weight(port, token, weight):
    body = json.dumps({"weight": weight}).encode()
    status, _, answer = await request(
        port,
        f"PUT /v1/rollouts/{ROLLOUT}/weight HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n",
        body,
    )
    if status != 200:
        raise RuntimeError(f"PUT weight {weight}: status {status}: {answer[:200]!r}")


async def snapshot_version(port, token):
    status, headers, _ = await request(
        port,
        f"GET /v1/snapshot HTTP/1.1\r\nHost: {HOST}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
    )
    if status != 200:
        raise RuntimeError(f"GET /v1/snapshot: status {status}")
    return int(headers[VERSION_HEADER])


async def probe(port, key):
    """Which variant served KEY, on a fresh connection to the Envoy on PORT."""
    status, headers, _ = await request(
        port,
        f"GET / HTTP/1.1\r\nHost: checkout.local\r\nx-user-id: {key}\r\nConnection: close\r\n\r\n",
    )
    if status != 200:
        raise RuntimeError(f"Envoy :{port}: status {status}")
    return headers.get("x-served-by", "")


async def until_routing(port, key, want, run, deadline):
    """When the Envoy on PORT answered the first of RUN probes in a row from WANT; None if
    not before DEADLINE. Then RUN more probes: how many came from another variant (late)."""
    streak, since = 0, None
    while streak < run:
        if time.monotonic() > deadline:
            return None, 0
        got = await probe(port, key)
        if got == want:
            streak += 1
            if streak == 1:
                since = time.monotonic()
        else:
            streak = 0
    late = 0
    for _ in range(run):
        late += await probe(port, key) != want
    return since, late


def quantile(values, q):
    """The nearest-rank quantile of VALUES."""
    s = sorted(values)
    return s[min(len(s), max(1, math.ceil(q * len(s)))) - 1]


class FleetProcess:
    """The pollers mode as a child process, and what it reports: when all pollers held each
    version (monotonic seconds, comparable across processes on one machine)."""

    def __init__(self, child):
        self.child = child
        self.ready = False
        self.all_at = {}
        self.done = ""
        self.changed = asyncio.Condition()
        self.reader = asyncio.create_task(self.read())

    @classmethod
    async def start(cls, port, token, n, limit):
        child = await asyncio.create_subprocess_exec(
            sys.executable, __file__, "pollers", str(port), token, str(n), str(limit),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )
        fleet = cls(child)
        await fleet.wait_for(lambda: fleet.ready, limit)
        if not fleet.ready:
            raise RuntimeError("the pollers failed to start")
        return fleet

    async def read(self):
        while words := (await self.child.stdout.readline()).decode().split():
            async with self.changed:
                if words[0] == "READY":
                    self.ready = True
                elif words[0] == "ALL":
                    self.all_at[int(words[1])] = float(words[2])
                elif words[0] == "DONE":
                    self.done = " ".join(words[1:])
                self.changed.notify_all()
        async with self.changed:
            self.changed.notify_all()

    async def wait_for(self, predicate, timeout):
        """Whether PREDICATE came true within TIMEOUT; false as well if the child ended."""
        async with self.changed:
            try:
                return await asyncio.wait_for(
                    self.changed.wait_for(lambda: predicate() or self.reader.done()), max(0.0, timeout)
                ) and predicate()
            except asyncio.TimeoutError:
                return False

    async def all_have(self, version, timeout):
        """When every poller held VERSION (or a later one); None if not within TIMEOUT."""
        reached = lambda: [t for v, t in self.all_at.items() if v >= version]
        return min(reached()) if await self.wait_for(reached, timeout) else None

    async def stop(self):
        self.child.stdin.close()
        await asyncio.wait_for(self.child.wait(), 10)
        await self.reader


def row(name, seconds, n):
    """A table row: p50, p99 and max in ms of SECONDS, and how many of N were reached."""
    if not seconds:
        return f"{name:<{NAME_WIDTH}} {'-':>8} {'-':>8} {'-':>8}  0/{n}"
    ms = [f"{x * 1000:.1f}" for x in (quantile(seconds, 0.5), quantile(seconds, 0.99), max(seconds))]
    return f"{name:<{NAME_WIDTH}} {ms[0]:>8} {ms[1]:>8} {ms[2]:>8}  {len(seconds)}/{n}"


async def run_changes(a):
    envoys = [int(p) for p in a.envoys.split(",")]
    fleet = await FleetProcess.start(a.sidecar, a.poll_token, a.pollers, a.limit)
    answered, late = [], 0
    # Per change: (from sending the PUT, from its answer), until every Envoy / poller has it.
    to_envoys, to_pollers = [], []
    for i in range(a.changes):
        weight = a.high if i % 2 == 0 else a.low
        want = "canary" if weight == a.high else "stable"
        t0 = time.monotonic()
        await set_weight(a.sidecar, a.token, weight)
        t1 = time.monotonic()
        answered.append(t1 - t0)
        deadline = t0 + CHANGE_LIMIT_S
        version, *results = await asyncio.gather(
            snapshot_version(a.sidecar, a.token),
            *(until_routing(p, a.key, want, a.run, deadline) for p in envoys),
        )
        if all(since is not None for since, _ in results):
            at = max(since for since, _ in results)
            to_envoys.append((at - t0, at - t1))
        late += sum(n for _, n in results)
        at = await fleet.all_have(version, deadline - time.monotonic())
        if at is not None:
            to_pollers.append((at - t0, at - t1))
    await fleet.stop()
    print(f"{f'fan-out, {a.changes} weight changes':<{NAME_WIDTH}} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}  reached")
    print(row("the API answered", answered, a.changes))
    for what, times in ((f"all {len(envoys)} Envoys (x2 workers) route by it", to_envoys),
                        (f"all {a.pollers} pollers have it", to_pollers)):
        print(row(f"{what}, from sending", [t for t, _ in times], a.changes))
        print(row(f"{what}, from the answer", [t for _, t in times], a.changes))
    print(f"(routing: the first of {a.run} fresh-connection probes in a row on the new variant; "
          f"old-variant answers in {a.run} more probes: {late}; pollers: {fleet.done or 'no result'})")


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "pollers":
        port, token, n, limit = int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), float(sys.argv[5])
        asyncio.run(run_pollers(port, token, n, limit))
        return
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("mode", choices=["changes"])
    p.add_argument("--sidecar", type=int, required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--poll-token", required=True)
    p.add_argument("--envoys", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--low", type=float, required=True)
    p.add_argument("--high", type=float, required=True)
    p.add_argument("--changes", type=int, default=100)
    p.add_argument("--pollers", type=int, default=1000)
    p.add_argument("--run", type=int, default=10)
    p.add_argument("--limit", type=float, default=900, help="seconds the whole run may take")
    a = p.parse_args()
    asyncio.run(asyncio.wait_for(run_changes(a), a.limit))


main()
