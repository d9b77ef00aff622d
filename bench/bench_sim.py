"""Simulator throughput at zero latency: requests/s it answers, from a separate client process.

    python bench/bench_sim.py [--seconds 5] [--concurrency 64] [--clients 1]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import time

import aiohttp

from harvester.sim import SimConfig, Simulator


def serve(port_q: mp.Queue) -> None:
    async def main() -> None:
        sim = Simulator(SimConfig())
        url = await sim.start()
        port_q.put(url)
        await asyncio.Event().wait()
    asyncio.run(main())


def load(url: str, seconds: float, concurrency: int, out_q: mp.Queue) -> None:
    async def main() -> int:
        done = 0
        deadline = time.monotonic() + seconds
        conn = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=conn) as session:
            async def worker(i: int) -> None:
                nonlocal done
                n = 0
                while time.monotonic() < deadline:
                    body = {"model": "m", "messages": [{"role": "user", "content": f"prompt {i}-{n}"}],
                            "max_tokens": 64}
                    async with session.post(url + "/chat/completions", json=body) as r:
                        await r.read()
                        done += r.status == 200
                    n += 1
            await asyncio.gather(*(worker(i) for i in range(concurrency)))
        return done
    out_q.put(asyncio.run(main()))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--clients", type=int, default=1)
    args = ap.parse_args()
    q: mp.Queue = mp.Queue()
    server = mp.Process(target=serve, args=(q,), daemon=True)
    server.start()
    url = q.get(timeout=30)
    out: mp.Queue = mp.Queue()
    clients = [mp.Process(target=load, args=(url, args.seconds, args.concurrency, out))
               for _ in range(args.clients)]
    t0 = time.monotonic()
    for c in clients:
        c.start()
    total = sum(out.get() for _ in clients)
    elapsed = time.monotonic() - t0
    for c in clients:
        c.join()
    server.terminate()
    print(json.dumps({"answered": total, "seconds": round(elapsed, 2),
                      "requests_per_s": round(total / elapsed), "clients": args.clients,
                      "concurrency_per_client": args.concurrency}))


if __name__ == "__main__":
    main()
