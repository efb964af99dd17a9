"""How the multi-process tests start torchrun: on a port the OS reports free, not a fixed number that another
process on the machine (or a previous test's socket) may hold."""

from __future__ import annotations

import socket
import sys


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def torchrun(nproc: int = 2) -> list[str]:
    """The command prefix that runs a script under torchrun with ``nproc`` local processes."""
    return [sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={nproc}", f"--master_port={free_port()}"]
