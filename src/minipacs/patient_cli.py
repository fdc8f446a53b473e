"""`minipacs patient restrict | unrestrict | restricted`: restricted (VIP, staff,
sensitive) patients whose studies need a break-the-glass reason to read
(`access/restricted.py`). The operator acts as the system principal, audited by OS user.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from minipacs.access import restricted
from minipacs.accounts_cli import cli_actor
from minipacs.config import Settings
from minipacs.maintenance_cli import _reporting_errors

AddFlags = Callable[[argparse.ArgumentParser], None]


@_reporting_errors
def cmd_patient(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.orm import Session

    from minipacs.admin_cli import _engines
    from minipacs.index.database import create_schema

    reader, writer = _engines(settings)
    create_schema(writer)
    actor = cli_actor(f"patient-{args.patient_command}")
    with Session(writer) as session, session.begin():
        if args.patient_command == "restrict":
            created = restricted.restrict(session, args.patient_id, args.issuer,
                                          args.reason, actor)
            print(("restricted" if created else "reason updated for restricted")
                  + f" patient {args.patient_id}")
        elif args.patient_command == "unrestrict":
            if not restricted.unrestrict(session, args.patient_id, args.issuer, actor):
                print(f"patient {args.patient_id} (issuer {args.issuer or 'none'}) "
                      "is not restricted")
                return 1
            print(f"unrestricted patient {args.patient_id}")
        else:
            rows = restricted.restrictions(session)
            if not rows:
                print("no restricted patients (minipacs patient restrict ID --reason ...)")
            for r in rows:
                print(f"{r.patient_id}\t{r.issuer}\t{r.reason}\t{r.restricted_by}")
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 add_setting_flags: AddFlags) -> None:
    patient = sub.add_parser("patient", help="restricted (VIP) patients",
                             description="Patients whose studies need a break-the-glass "
                             "reason (HTTP X-Break-Glass-Reason) to read.")
    psub = patient.add_subparsers(dest="patient_command", required=True, metavar="ACTION")
    for name, helptext in (("restrict", "flag a patient restricted"),
                           ("unrestrict", "lift a restriction"),
                           ("restricted", "list restricted patients")):
        parser = psub.add_parser(name, help=helptext)
        if name != "restricted":
            parser.add_argument("patient_id", metavar="PATIENT_ID")
            parser.add_argument("--issuer", default="", help="IssuerOfPatientID")
        if name == "restrict":
            parser.add_argument("--reason", required=True,
                                help="why: VIP, staff member, sensitive case")
        add_setting_flags(parser)
        parser.set_defaults(func=cmd_patient)
