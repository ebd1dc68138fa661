"""Optional py-spy sampling of service processes during a phase, summarised as top functions (self and
inclusive share of samples) so a bottleneck can be named by service and function."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
from collections import Counter
from pathlib import Path


class PySpy:
    def __init__(self, exe: str, out_dir: Path, tag: str, pids: dict[str, int], duration_s: int) -> None:
        self.exe = exe
        self.out_dir = out_dir
        self.tag = tag
        self.pids = pids
        self.duration_s = duration_s
        self.procs: dict[str, tuple[subprocess.Popen[bytes], Path]] = {}

    def start(self) -> None:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        for name, pid in self.pids.items():
            out = self.out_dir / f"pyspy-{self.tag}-{name}.txt"
            args = [self.exe, "record", "--pid", str(pid), "--format", "raw", "--output", str(out)]
            args += ["--duration", str(self.duration_s), "--rate", "200", "--nonblocking"]
            self.procs[name] = (subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), out)

    async def stop(self) -> dict[str, dict[str, list[tuple[str, float]]]]:
        result = {}
        for name, (p, out) in self.procs.items():
            with contextlib.suppress(subprocess.TimeoutExpired):
                await asyncio.to_thread(p.wait, self.duration_s + 30)
            if p.poll() is None:
                p.terminate()
                p.wait(10)
            if out.exists():
                result[name] = top_functions(out.read_text())
        return result


def top_functions(raw: str, k: int = 12) -> dict[str, list[tuple[str, float]]]:
    """From py-spy raw (collapsed) stacks: the k functions with most self samples and most inclusive samples,
    as (function, % of all samples). Idle samples (the event loop waiting in select) count as samples."""
    self_c: Counter[str] = Counter()
    incl_c: Counter[str] = Counter()
    total = 0
    for line in raw.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        self_c[frames[-1]] += count
        for f in set(frames):
            incl_c[f] += count
    if not total:
        return {"self": [], "inclusive": []}
    return {
        "self": [(f, 100 * c / total) for f, c in self_c.most_common(k)],
        "inclusive": [(f, 100 * c / total) for f, c in incl_c.most_common(k * 3)],
    }
