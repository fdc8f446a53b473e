"""One pynetdicom storage SCU on one association: sends the files listed in LIST_FILE.

    python bench/store_peer.py HOST PORT CALLED_AE LIST_FILE

Reads every file first, then prints one JSON line: the CLOCK_MONOTONIC times at which the
association was requested and the last response arrived (comparable across processes),
and how many stores did not answer Success.

pynetdicom's own association thread is parked before the first C-STORE and kept parked
(`hold_reactor`, as minipacs does for its C-MOVE store associations). Left to
pynetdicom, `send_c_store` pauses that thread and lets it run again around every
request, which costs up to a millisecond per store, and pynetdicom's pause can let the
thread take the C-STORE-RSP itself (minipacs.dimse.reactor_pause; that lost a response
three times in the benchmark's smoke runs, whatever the server).
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pynetdicom import AE, evt

from minipacs.dimse.retrieve_scp import hold_reactor


def _nodelay(event: evt.Event) -> None:
    event.assoc.dul.socket.socket.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


def _park_reactor(assoc: Any) -> None:
    """Stop the association's reactor thread at its checkpoint for the whole run."""
    held = hold_reactor(assoc)
    assert held is not None  # we are the requestor
    held.held = True
    held.clear()  # returns once the thread is parked (or the association is gone)


def main() -> None:
    host, port, called, listing = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
    datasets = [dcmread(p) for p in Path(listing).read_text().split("\n") if p]
    ae = AE(ae_title="BENCH")
    # A store that gets no answer in 120 s is a stalled association: fail, do not hang.
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    for pair in sorted({(str(ds.SOPClassUID), str(ds.file_meta.TransferSyntaxUID))
                        for ds in datasets}):
        ae.add_requested_context(*pair)
    handlers = []
    if os.environ.get("TCP_NODELAY") == "1":  # as dcmtk does: see measure.py
        handlers.append((evt.EVT_CONN_OPEN, _nodelay))
    start = time.monotonic()
    assoc = ae.associate(host, port, ae_title=called, evt_handlers=handlers)
    if not assoc.is_established:
        raise SystemExit(f"association with {called} at {host}:{port} refused")
    _park_reactor(assoc)
    failed = 0
    for ds in datasets:
        status = assoc.send_c_store(ds)
        if not status or status.get("Status", -1) != 0:
            failed += 1
            # Say which and why (run.py shows this when it stops): no response (the
            # association ended: aborted or timed out) or the status the SCP answered.
            print(f"C-STORE of {ds.SOPInstanceUID}: "
                  + (f"status 0x{status.Status:04X}" if status else
                     f"no response (association established={assoc.is_established}, "
                     f"aborted={assoc.is_aborted})"), file=sys.stderr)
    assoc.release()
    print(json.dumps({"start": start, "end": time.monotonic(), "failed": failed}))


if __name__ == "__main__":
    main()
