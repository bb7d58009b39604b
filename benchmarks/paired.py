"""Benchmark: `POST /call` of two source trees side by side, paired, to see changes below run-to-run noise.

    git worktree add /tmp/before <revision>
    python benchmarks/paired.py /tmp/before . [--orders 1500] [--server memory|file]

`placement.py`'s p50 moves by about 0.15 of a bare start between runs on a shared machine, so a change of
a few tenths of a millisecond does not show there. Here both trees' `outdial api` (each in its own process,
in this environment) serve one dev server and one database; each round posts the same order to both and
starts one bare, in all six orders in turn, so each pair of requests sees the same machine. Reported: p50
of each against the bare start, and the median and trimmed mean of the per-round differences.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

if __name__ == "__main__":  # run as a script from anywhere: the repo root is the import root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import orders, percentile
from benchmarks.placement import api_process, bench_stack
from benchmarks.raw_http import RawHttp


async def run(before: Path, after: Path, n: int, server_file: bool) -> None:
    body = json.dumps(orders.now().model_dump(mode="json", exclude_none=True)).encode()
    async with bench_stack(server_file, "paired") as bench:
        settings, workdir = bench.settings, bench.workdir
        samples: dict[str, list[float]] = {"before": [], "after": [], "bare": []}
        auth = {"Authorization": f"Bearer {bench.key}"}
        async with (
            api_process(settings, workdir, before) as before_port,
            api_process(settings, workdir, after) as after_port,
            RawHttp("127.0.0.1", before_port, auth) as before_http,
            RawHttp("127.0.0.1", after_port, auth) as after_http,
        ):

            def poster(name: str, http: RawHttp) -> Callable[[], Awaitable[None]]:
                request = http.request("POST", "/call", body)

                async def post() -> None:
                    started = time.perf_counter()
                    response = await http.send(request)
                    samples[name].append((time.perf_counter() - started) * 1000)
                    assert response.status == 200, response.body

                return post

            async def start_bare() -> None:
                samples["bare"].append(await bench.start_bare())

            turns = list(
                itertools.permutations(
                    [poster("before", before_http), poster("after", after_http), start_bare]
                )
            )
            for i in range(n + 12):  # the first 12 rounds warm up connections and caches
                for step in turns[i % len(turns)]:
                    await step()
                if i == 11:
                    for values in samples.values():
                        values.clear()
    bare = percentile(samples["bare"], 50)
    server = "on a SQLite file" if server_file else "in memory"
    print(f"orders={n} to each tree, one at a time, paired; dev server {server}")
    for name, tree in (("before", before), ("after", after)):
        p50 = percentile(samples[name], 50)
        print(f"{name:6s} p50 {p50:6.2f} ms  ratio to a bare start {p50 / bare:.2f}  ({tree})")
    print(f"bare   p50 {bare:6.2f} ms")
    differences = sorted(b - a for a, b in zip(samples["before"], samples["after"], strict=True))
    cut = len(differences) // 10
    print(
        f"after - before, per round: median {statistics.median(differences):+.3f} ms, "
        f"mean of the middle 80% {statistics.mean(differences[cut : len(differences) - cut]):+.3f} ms"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("before", type=Path, help="a source tree of outdial (e.g. a git worktree)")
    parser.add_argument("after", type=Path, help="another one (e.g. .)")
    parser.add_argument("--orders", type=int, default=1500)
    parser.add_argument("--server", choices=["file", "memory"], default="memory")
    args = parser.parse_args()
    asyncio.run(run(args.before.resolve(), args.after.resolve(), args.orders, args.server == "file"))
