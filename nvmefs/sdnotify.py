"""sd_notify(3) without libsystemd: the service manager's datagram protocol.

With `Type=notify` systemd puts the path of a datagram socket in $NOTIFY_SOCKET
(a file system path, or an abstract address written with a leading '@') and
waits for "READY=1" from the main process. Sending is best effort: a socket that
is gone or full never fails the mount, it is logged and forgotten.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger(__name__)


def notify(*fields: str) -> bool:
    """Send KEY=VALUE lines (e.g. "READY=1", "STATUS=...") to $NOTIFY_SOCKET;
    True if they went out, False if there is no socket or it failed."""
    where = os.environ.get("NOTIFY_SOCKET", "")
    if where.startswith("@"):
        address = "\0" + where[1:]                  # abstract namespace
    elif where.startswith("/"):
        address = where
    else:
        if where:
            log.debug("NOTIFY_SOCKET=%s: not a unix socket address, not notifying", where)
        return False
    message = "\n".join(f.replace("\n", " ") for f in fields).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
            s.setblocking(False)                # a full queue must not stall the daemon
            s.sendto(message, address)
    except OSError as e:
        log.warning("could not notify the service manager at %s: %s", where, e)
        return False
    return True
