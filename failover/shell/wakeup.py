"""A non-blocking pipe that wakes an event loop from another thread."""

from __future__ import annotations

import os


class Wakeup:
    """``poke()`` from any thread; a loop watches ``fd`` and drains it."""

    def __init__(self) -> None:
        self.fd, self.write_fd = os.pipe()
        os.set_blocking(self.fd, False)
        os.set_blocking(self.write_fd, False)

    def poke(self) -> None:
        try:
            os.write(self.write_fd, b"!")
        except BlockingIOError:
            pass  # already full: the reader will wake anyway

    def drain(self) -> None:
        try:
            while os.read(self.fd, 4096):
                pass
        except BlockingIOError:
            pass

    @staticmethod
    def close_fds(fds: tuple[int, int]) -> None:
        for fd in fds:
            os.close(fd)
