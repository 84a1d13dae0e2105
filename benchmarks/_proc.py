"""What /proc says about a process: CPU seconds, RSS, open descriptors, I/O.

Linux only, like the rest of the suite. Read from /proc rather than psutil so
the suite needs nothing beyond the project's own dependencies.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

__all__ = ["ProcSample", "sample", "tree", "tree_cpu_seconds", "tree_rss_bytes", "cpu_seconds", "rss_bytes", "open_fds", "io_bytes", "machine", "loadavg"]

_TICK = os.sysconf("SC_CLK_TCK")
_PAGE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True, slots=True)
class ProcSample:
    cpu: float       # user + system seconds since the process started (all threads)
    rss: int         # resident bytes
    fds: int         # open file descriptors


def cpu_seconds(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/stat", "rb") as f:
        data = f.read()
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = data[data.rindex(b")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / _TICK


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants (hypercorn, for one, serves from a child)."""
    out = [pid]
    i = 0
    while i < len(out):
        p = out[i]
        i += 1
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/children") as f:
                    out.extend(int(c) for c in f.read().split())
        except OSError:
            continue
    return out


def tree_cpu_seconds(pid: int) -> float:
    total = 0.0
    for p in tree(pid):
        try:
            total += cpu_seconds(p)
        except OSError:
            pass
    return total


def tree_rss_bytes(pid: int) -> int:
    total = 0
    for p in tree(pid):
        try:
            total += rss_bytes(p)
        except OSError:
            pass
    return total


def rss_bytes(pid: int | str = "self") -> int:
    with open(f"/proc/{pid}/statm", "rb") as f:
        return int(f.read().split()[1]) * _PAGE


def open_fds(pid: int | str = "self") -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except PermissionError:  # pragma: no cover - not our process
        return -1


def io_bytes(pid: int | str = "self") -> tuple[int, int]:
    """(rchar, wchar): bytes passed to read()/write() calls, sockets included.
    Sampling this is how a wrk run gets a throughput-over-time curve for free."""
    rchar = wchar = 0
    with open(f"/proc/{pid}/io", "rb") as f:
        for line in f:
            if line.startswith(b"rchar:"):
                rchar = int(line.split()[1])
            elif line.startswith(b"wchar:"):
                wchar = int(line.split()[1])
    return rchar, wchar


def sample(pid: int | str = "self") -> ProcSample:
    return ProcSample(cpu_seconds(pid), rss_bytes(pid), open_fds(pid))


def loadavg() -> tuple[float, float, float]:
    with open("/proc/loadavg") as f:
        a, b, c = f.read().split()[:3]
    return float(a), float(b), float(c)


def machine() -> dict[str, object]:
    """Cores, memory, CPU model, kernel and load: printed with every result."""
    mem = 0
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = int(line.split()[1]) * 1024
                break
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover
        pass
    import platform

    return {
        "cores": os.cpu_count(),
        "memory_gib": round(mem / 2**30, 1),
        "cpu": model,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": loadavg(),
    }
