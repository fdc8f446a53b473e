"""Server CPU of idle DICOM associations: open N associations (C-ECHO each), hold them
silent for S seconds, and print the server's CPU seconds per second over that window
(psutil, user + system). A number, not a test.

    PYTHONPATH=src .venv/bin/python bench/idle_associations.py --associations 20 --seconds 5
"""

from __future__ import annotations

import argparse
import time

import psutil
from dimse_latency import started_minipacs
from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--associations", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with started_minipacs() as (server, port):
        ae = AE(ae_title="IDLEBENCH")
        ae.add_requested_context(Verification)
        held = []
        for _ in range(args.associations):
            assoc = ae.associate("127.0.0.1", port, ae_title="MINIPACS")
            assert assoc.is_established and assoc.send_c_echo().Status == 0
            held.append(assoc)
        proc = psutil.Process(server.pid)
        before = proc.cpu_times()
        time.sleep(args.seconds)  # the measured window: nothing happens
        after = proc.cpu_times()
        used = (after.user - before.user) + (after.system - before.system)
        print(f"{args.associations} idle associations: server CPU "
              f"{used / args.seconds:.3f} s/s over {args.seconds} s")
        for assoc in held:
            assoc.release()


if __name__ == "__main__":
    main()
