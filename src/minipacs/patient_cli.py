"""`minipacs patient restrict | unrestrict | restricted`: restricted (VIP, staff,
sensitive) patients whose studies need a break-the-glass reason to read
(`access/restricted.py`). `minipacs patient update | merge | history`: reconciliation
(`emr/reconciliation.py`, through the archive). The operator acts as the system
principal, audited by OS user.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from minipacs.access import restricted
from minipacs.access.principal import cli_principal
from minipacs.config import Settings
from minipacs.maintenance_cli import _reporting_errors

AddFlags = Callable[[argparse.ArgumentParser], None]


@_reporting_errors
def cmd_patient(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy.orm import Session

    from minipacs.admin_cli import _engines
    from minipacs.index.database import create_schema

    if args.patient_command in _RECONCILE:
        return _reconcile(args, settings)
    reader, writer = _engines(settings)
    create_schema(writer)
    actor = cli_principal(f"patient-{args.patient_command}").actor
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


_RECONCILE = ("update", "merge", "history")


def _reconcile(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.node import open_archive

    base = open_archive(settings)
    try:
        archive = base.acting_as(cli_principal(f"patient-{args.patient_command}"))
        if args.patient_command == "update":
            changes = {keyword: value for keyword, value in (
                ("PatientName", args.name), ("PatientBirthDate", args.birth_date),
                ("PatientSex", args.sex)) if value is not None}
            done = archive.update_patient((args.patient_id, args.issuer), changes,
                                          reason=args.reason)
            for keyword, value in done.after.items():
                if done.before[keyword] != value:
                    print(f"{keyword}: {done.before[keyword]!r} -> {value!r}")
            print(f"patient {args.patient_id}: {len(done.study_uids)} studies, "
                  f"{done.instances_corrected} instances served corrected")
        elif args.patient_command == "merge":
            done = archive.merge_patients((args.source, args.source_issuer),
                                          (args.target, args.target_issuer),
                                          reason=args.reason)
            print(f"merged patient {args.source} into {args.target}: "
                  f"{len(done.study_uids)} studies, {done.instances_corrected} instances "
                  "served corrected" + (" (restriction carried over)"
                                        if done.restriction_carried else ""))
        else:
            entries = archive.patient_history((args.patient_id, args.issuer))
            if not entries:
                print(f"patient {args.patient_id} has no corrections")
            for c in entries:
                what = (f"merge from {c.source_patient_id}" if c.kind == "merge"
                        else "update")
                print(f"{c.at:%Y-%m-%d %H:%M:%S}\t{what}\t{c.actor}\t{c.reason}\t"
                      f"before {json.dumps(c.before, ensure_ascii=False)}\t"
                      f"after {json.dumps(c.after, ensure_ascii=False)}")
    finally:
        base.close()
    return 0


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 add_setting_flags: AddFlags) -> None:
    patient = sub.add_parser(
        "patient", help="restricted (VIP) patients; correct or merge patient records",
        description="restrict/unrestrict/restricted: patients whose studies need a "
        "break-the-glass reason (HTTP X-Break-Glass-Reason) to read. update/merge/history: "
        "reconciliation (docs/emr-integration.md): stored files are never rewritten, "
        "every door serves the corrected patient, the originals stay in the history.")
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
    _add_reconcile_commands(psub, add_setting_flags)


def _add_reconcile_commands(psub: argparse._SubParsersAction[argparse.ArgumentParser],
                            add_setting_flags: AddFlags) -> None:
    update = psub.add_parser(
        "update", help="correct a patient's name, birth date or sex",
        description="Correct demographics in the index; every door (C-FIND, QIDO-RS, "
        "WADO-RS, C-GET/C-MOVE, FHIR, viewer) then shows them. Example: minipacs patient "
        "update BN0012 --name 'Nguyễn^Văn An' --birth-date 19800101 --reason 'typo at CT'")
    update.add_argument("patient_id", metavar="PATIENT_ID")
    update.add_argument("--issuer", default="", help="IssuerOfPatientID (default: none)")
    update.add_argument("--name", help="PatientName, DICOM PN: Family^Given^Middle")
    update.add_argument("--birth-date", help="PatientBirthDate, YYYYMMDD")
    update.add_argument("--sex", help="PatientSex: M, F or O")
    merge = psub.add_parser(
        "merge", help="move every study of one patient to another",
        description="The source's studies become the target's; the source ID becomes an "
        "alias (instances arriving later with it are filed under the target). Example: "
        "minipacs patient merge BN-WRONG BN0012 --reason 'wrong ID typed at the modality'")
    merge.add_argument("source", metavar="SOURCE_ID", help="the wrong PatientID")
    merge.add_argument("target", metavar="TARGET_ID", help="the right PatientID")
    merge.add_argument("--source-issuer", default="", help="the source's IssuerOfPatientID")
    merge.add_argument("--target-issuer", default="", help="the target's IssuerOfPatientID")
    history = psub.add_parser("history", help="a patient's corrections and merges",
                              description="Values before and after each correction.")
    history.add_argument("patient_id", metavar="PATIENT_ID")
    history.add_argument("--issuer", default="", help="IssuerOfPatientID")
    for parser in (update, merge):
        parser.add_argument("--reason", required=True,
                            help="why (kept in the history and the audit trail)")
    for parser in (update, merge, history):
        add_setting_flags(parser)
        parser.set_defaults(func=cmd_patient)
