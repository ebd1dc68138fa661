"""`adp up` as a process supervisor: a service process that exits is started again in its place (same name,
port and settings), after a back-off that grows while it keeps crashing; every exit and restart is reported,
and the state of every process is kept in `<data-dir>/processes.json` for `adp status`."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adp_cli.procs import Proc, ProcessManager
from adp_common.retry import Backoff

STATE_FILE = "processes.json"
FIRST_DELAY_S = 1.0
MAX_DELAY_S = 30.0
STABLE_AFTER_S = 30.0  # a copy that ran this long before exiting starts again at the first delay


def restart_delay(crashes_in_a_row: int, first_s: float = FIRST_DELAY_S, cap_s: float = MAX_DELAY_S) -> float:
    """Back-off before a restart: first_s after one crash, doubling with every further quick crash."""
    return Backoff(initial_s=first_s, max_s=cap_s).pause(crashes_in_a_row)


@dataclass
class Watched:
    proc: Proc
    started_at: float
    crashes_in_a_row: int = 0
    last_exit: int | None = None
    restart_at: float | None = None  # set while an exited copy waits for its restart


class Supervisor:
    def __init__(
        self,
        manager: ProcessManager,
        procs: list[Proc],
        state_dir: Path,
        report: Callable[[str], None] = lambda line: print(line, file=sys.stderr, flush=True),
    ) -> None:
        self.manager = manager
        now = time.monotonic()
        self.watched = [Watched(p, now) for p in procs]
        self.state_file = state_dir / STATE_FILE
        self.report = report

    @property
    def procs(self) -> list[Proc]:
        return [w.proc for w in self.watched]

    def check(self, now: float | None = None) -> None:
        """Notice exits and start the copies whose back-off is over (call about once a second). The state
        file is written before the news is reported, so whoever reads the report finds it there."""
        now = time.monotonic() if now is None else now
        news: list[str] = []
        for w in self.watched:
            if w.restart_at is None and not w.proc.alive():
                w.last_exit = w.proc.popen.returncode
                quick = now - w.started_at < STABLE_AFTER_S
                w.crashes_in_a_row = w.crashes_in_a_row + 1 if quick else 1
                delay = restart_delay(w.crashes_in_a_row)
                w.restart_at = now + delay
                news.append(f"!! {w.proc.name} exited with {w.last_exit}; restarting in {delay:g} s")
            elif w.restart_at is not None and now >= w.restart_at:
                w.proc = self.manager.start(w.proc.service, replacing=w.proc)
                w.started_at, w.restart_at = now, None
                news.append(f"   {w.proc.name} restarted (pid {w.proc.popen.pid}, restart {w.proc.restarts})")
        if news:
            self.write_state()
        for line in news:
            self.report(line)

    def state(self) -> dict[str, Any]:
        return {
            "supervisor_pid": os.getpid(),
            "updated": time.time(),
            "processes": [
                {
                    "name": w.proc.name,
                    "service": w.proc.service,
                    "pid": w.proc.popen.pid,
                    "port": w.proc.port,
                    "state": "waiting to restart" if w.restart_at is not None else "running",
                    "restarts": w.proc.restarts,
                    "last_exit": w.last_exit,
                }
                for w in self.watched
            ],
        }

    def write_state(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.state(), indent=1))
        tmp.replace(self.state_file)

    def remove_state(self) -> None:
        self.state_file.unlink(missing_ok=True)


def read_state(data_dir: Path) -> list[dict[str, Any]] | None:
    """The processes of the `adp up` running with this data dir, or None when none runs."""
    path = data_dir / STATE_FILE
    try:
        state = json.loads(path.read_text())
        os.kill(int(state["supervisor_pid"]), 0)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    procs = state.get("processes")
    return procs if isinstance(procs, list) else None
