"""`minipacs fhir-push status | retry`: the FHIR push's studies (waiting, due, failed,
with the last error) and pushing them again (`emr/fhir_push.py`). The operator acts as
the system principal, audited by OS user; a node that pushes picks retries up at its
next run."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from minipacs.access.principal import cli_principal
from minipacs.config import Settings
from minipacs.maintenance_cli import _reporting_errors

AddFlags = Callable[[argparse.ArgumentParser], None]
_STATES = {"open": ("waiting", "due", "failed"),
           "all": ("waiting", "due", "failed", "pushed", "deleted")}


@_reporting_errors
def cmd_fhir_push(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.emr.fhir_push import FhirPushQueue
    from minipacs.node import open_archive

    archive = open_archive(settings)
    try:
        queue = FhirPushQueue(archive.acting_as(cli_principal(f"fhir-push-{args.action}")))
        if args.action == "retry":
            count = queue.retry(args.study)
            print(f"{count} studies queued for the FHIR push"
                  + ("" if settings.fhir_push_url else
                     " (no node pushes until MINIPACS_FHIR_PUSH_URL is set)"))
            return 0
        states = _STATES.get(args.state, (args.state,))
        rows = queue.status(states)  # type: ignore[arg-type]
    finally:
        archive.close()
    print(f"FHIR push to {settings.fhir_push_url or '(off: MINIPACS_FHIR_PUSH_URL unset)'}")
    if not rows:
        print(f"no studies {args.state}")
    for s in rows:
        print(f"{s.state}\t{s.study_instance_uid}\tpatient {s.patient_id or '?'}\t"
              f"attempts {s.attempts}\tnext {s.next_attempt_at:%Y-%m-%d %H:%M:%S}Z"
              + (f"\t{s.last_error}" if s.last_error else "")
              + (f"\t{s.remote_imaging_study}" if s.remote_imaging_study else ""))
    return 1 if any(s.state == "failed" for s in rows) else 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 add_setting_flags: AddFlags) -> None:
    push = sub.add_parser("fhir-push", help="the FHIR push to the hospital's FHIR server",
                          description="Studies the FHIR push has not delivered yet, and "
                          "retrying them.")
    psub = push.add_subparsers(dest="action", required=True, metavar="ACTION")
    status = psub.add_parser("status", help="studies waiting, due or failed (exit 1 "
                             "when some failed)")
    status.add_argument("--state", default="open",
                        choices=["open", "waiting", "due", "failed", "pushed", "deleted",
                                 "all"], help="which studies (default: open)")
    retry = psub.add_parser("retry", help="retry failed studies now, or (re)push one")
    retry.add_argument("--study", default=None, metavar="STUDY_UID",
                       help="this study only, even if pushed already")
    for parser in (status, retry):
        add_setting_flags(parser)
        parser.set_defaults(func=cmd_fhir_push)
