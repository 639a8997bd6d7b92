"""Opens N server-sent-event subscriptions to the sidecar on loopback and holds them.

Used by scripts/bench-sidecar.sh to measure the sidecar's memory with many subscribers.
Prints "READY <n>" once every stream has answered 200, then holds them until stdin closes
or the time limit passes; bounded in count and time.
"""
import asyncio
import sys


async def subscribe(port, token, held):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        f"GET /v1/events?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode()
    )
    await writer.drain()
    status = await reader.readline()
    if b" 200 " not in status:
        raise RuntimeError(f"subscription refused: {status!r}")
    held.append(writer)
    # Drain whatever the server sends so its buffers never fill.
    while await reader.read(4096):
        pass


async def main():
    port, token, n, limit = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
    held = []
    tasks = [asyncio.create_task(subscribe(port, token, held)) for _ in range(n)]
    deadline = asyncio.get_running_loop().time() + limit
    while len(held) < n:
        if asyncio.get_running_loop().time() > deadline:
            raise RuntimeError(f"only {len(held)} of {n} subscriptions answered")
        for t in tasks:
            if t.done() and t.exception():
                raise t.exception()
        await asyncio.sleep(0.05)
    print(f"READY {len(held)}", flush=True)
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    await asyncio.wait_for(stdin_closed, timeout=limit)
    for w in held:
        w.close()


asyncio.run(main())
