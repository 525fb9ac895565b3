"""failsh's control port (-D): the faild protocol over failsh's own transitions.

faildebug and failstat talk to it as to a faild: ``ping``, ``get``, ``list`` and
``history`` answer from a store that mirrors every local transition, ``loglevel``
changes failsh's log levels; ``set`` and ``lease`` are refused (states change in faild).
Requests are answered on the network thread, transitions come from the policy thread.
"""

from __future__ import annotations

import threading

from failover import protocol
from failover.faild import server, store
from failover.faild.community import RW, Rules
from failover.shell.localstate import Change

# What the control port (-D) answers: reads and log levels, never a state change
CONTROL_OPS = frozenset({"ping", "get", "list", "history", "loglevel"})


class ControlPort:
    def __init__(self, node: str, community: str) -> None:
        self.store = store.Store(None)
        self._faild = server.Faild(self.store, Rules({("*", community): RW}), server.host_info(node))
        self._lock = threading.Lock()

    def handle(self, frame: bytes) -> bytes:
        """Network thread: one request in, one reply out."""
        try:
            req = protocol.decode_request(frame)
        except protocol.ProtocolError:
            pass  # the server answers with the right error
        else:
            if req.op not in CONTROL_OPS:
                return protocol.encode(protocol.error_reply(
                    req.id, "BADOP", f"failsh's control port does not serve {req.op!r}; "
                    f"it serves {', '.join(sorted(CONTROL_OPS))} (change states in faild)"))
        with self._lock:
            return self._faild.handle(frame)

    def on_change(self, change: Change) -> None:
        """Policy thread: mirror a transition into the store the requests read."""
        with self._lock:
            self.store.set(change.service, change.new, change.reason)
            self._faild.invalidate()  # Faild caches encoded replies per state change
