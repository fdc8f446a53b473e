"""How often pynetdicom's reactor pause loses a response, with and without minipacs' fix.

    PYTHONPATH=src .venv/bin/python bench/pause_race.py [--seconds 60] [--busy 2]

Starts `minipacs serve` on an empty archive, then for `--seconds` sends C-ECHOs back to
back from one pynetdicom requestor in this process (200 per association), with `--busy`
threads spinning beside it (as a loaded peer would be scheduled), first with pynetdicom's
own pause, then with `minipacs.dimse.reactor_pause.install` on each association. An
echo with no response within 3 s is counted lost (the race: the association's reactor
took the C-ECHO-RSP; minipacs.dimse.reactor_pause explains it). Prints one line per mode.
"""

from __future__ import annotations

import argparse
import threading
import time
from typing import Any

from dimse_latency import started_minipacs
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from minipacs.dimse.reactor_pause import install

ECHOES_PER_ASSOCIATION = 200


def storm(port: int, seconds: float, race_free: bool) -> tuple[int, int]:
    """(echoes sent, echoes lost) in `seconds`."""
    ae = AE(ae_title="PAUSERACE")
    ae.dimse_timeout = 3
    ae.add_requested_context(Verification)
    sent = lost = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assoc: Any = ae.associate("127.0.0.1", port, ae_title="MINIPACS")
        if not assoc.is_established:
            raise SystemExit("association refused")
        if race_free:
            install(assoc)
        for _ in range(ECHOES_PER_ASSOCIATION):
            sent += 1
            if "Status" not in assoc.send_c_echo():
                lost += 1
                break  # pynetdicom aborts the association after a lost response
        if assoc.is_established:
            assoc.release()
    return sent, lost


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=60.0, help="per mode (default 60)")
    parser.add_argument("--busy", type=int, default=2, help="spinning threads (default 2)")
    args = parser.parse_args()
    running = True

    def spin() -> None:
        while running:
            pass

    spinners = [threading.Thread(target=spin, daemon=True) for _ in range(args.busy)]
    for spinner in spinners:
        spinner.start()
    try:
        with started_minipacs() as (_, port):
            for race_free in (False, True):
                sent, lost = storm(port, args.seconds, race_free)
                mode = "reactor_pause.install" if race_free else "pynetdicom's own pause"
                print(f"{mode:>24}: {sent} C-ECHOs, {lost} lost", flush=True)
    finally:
        running = False


if __name__ == "__main__":
    main()
