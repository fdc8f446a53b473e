"""`minipacs ae ...` and `minipacs worklist ...`: the remote AE registry and the
Modality Worklist from the command line.

Registered by `cli.build_parser`; each command opens the archive's index the settings
name, makes one registry call and prints the outcome.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import Engine

from minipacs.access.tags import parse_tags
from minipacs.ae_registry import RIGHTS, AERegistry, RemoteAE, parse_rights
from minipacs.config import Settings
from minipacs.errors import MinipacsError
from minipacs.index.database import create_index_engine

if TYPE_CHECKING:  # the worklist pulls in pydicom: imported when a worklist command runs
    from minipacs.emr.orders import Orders
    from minipacs.worklist import Worklist, WorklistItem

AddSettingFlags = Callable[[argparse.ArgumentParser], None]


def _engines(settings: Settings) -> tuple[Engine, Engine]:
    """Reader and writer engines on the index; no blob store or servers are needed."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    return (create_index_engine(settings.index_url),
            create_index_engine(settings.index_url, writer=True))


def _registry(settings: Settings) -> AERegistry:
    return AERegistry(*_engines(settings))


def cmd_ae_add(args: argparse.Namespace, settings: Settings) -> int:
    try:
        ae = _registry(settings).put(
            RemoteAE(
                ae_title=args.ae_title, host=args.host, port=args.port,
                rights=parse_rights(args.rights), pin_ip=args.pin_ip,
                default_charset=args.default_charset,
                charset_remap_from=args.charset_remap[0] if args.charset_remap else "",
                charset_remap_to=args.charset_remap[1] if args.charset_remap else "",
                ascii_responses=args.ascii_responses, description=args.description,
                tls=args.tls, store_tags=parse_tags(args.store_tags),
                access_tags=parse_tags(args.access_tags),
            )
        )
    except MinipacsError as exc:
        print(f"minipacs ae add: {exc}")
        return 2
    print(f"registered {ae.ae_title} at {ae.host}:{ae.port} ({','.join(sorted(ae.rights))})")
    return 0


def cmd_ae_list(args: argparse.Namespace, settings: Settings) -> int:
    aes = _registry(settings).all()
    if not aes:
        print("no remote AEs registered (minipacs ae add TITLE HOST PORT)")
    for ae in aes:
        options = [o for o, on in (("pin-ip", ae.pin_ip), ("ascii", ae.ascii_responses),
                                   ("tls", ae.tls)) if on]
        if ae.default_charset:
            options.append(f"charset={ae.default_charset}")
        if ae.charset_remap_from:
            options.append(f"remap={ae.charset_remap_from}->{ae.charset_remap_to}")
        if ae.store_tags:
            options.append(f"store-tags={','.join(sorted(ae.store_tags))}")
        if ae.access_tags:
            options.append(f"access-tags={','.join(sorted(ae.access_tags))}")
        print(f"{ae.ae_title:<16} {ae.host}:{ae.port:<5} {','.join(sorted(ae.rights)):<40} "
              f"{' '.join(options)}".rstrip())
    return 0


def cmd_ae_remove(args: argparse.Namespace, settings: Settings) -> int:
    try:
        _registry(settings).remove(args.ae_title)
    except MinipacsError as exc:
        print(f"minipacs ae remove: {exc}")
        return 1
    print(f"removed {args.ae_title}")
    return 0


def add_ae_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], add_setting_flags: AddSettingFlags
) -> None:
    ae = sub.add_parser(
        "ae", help="manage remote DICOM AEs (move destinations, access control)",
        description="The registry of remote Application Entities: where C-MOVE sends, "
        "who may associate when access control is on, per-AE character set options.",
    )
    ae_sub = ae.add_subparsers(dest="ae_command", required=True, metavar="ACTION")

    add = ae_sub.add_parser("add", help="register an AE or replace its entry")
    add.add_argument("ae_title", metavar="TITLE")
    add.add_argument("host", metavar="HOST")
    add.add_argument("port", type=int, metavar="PORT")
    add.add_argument("--rights", default="all",
                     help=f"comma-separated, from {','.join(RIGHTS)} (default: all)")
    add.add_argument("--pin-ip", action="store_true",
                     help="accept this calling AE title only from HOST")
    add.add_argument("--default-charset", default="", metavar="TERM",
                     help="(0008,0005) assumed for its data without one, e.g. 'ISO_IR 192'")
    add.add_argument("--charset-remap", nargs=2, metavar=("FROM", "TO"),
                     help="it labels data FROM but means TO, e.g. 'ISO_IR 100' 'ISO_IR 192'")
    add.add_argument("--ascii-responses", action="store_true",
                     help="send it C-FIND/worklist answers transliterated to ASCII")
    add.add_argument("--tls", action="store_true",
                     help="reach it over TLS (C-MOVE, Storage Commitment reports), checking "
                     "its certificate against MINIPACS_DICOM_TLS_CA")
    add.add_argument("--description", default="")
    add.add_argument("--store-tags", default="", metavar="TAGS",
                     help="comma-separated access tags given to the studies it stores")
    add.add_argument("--access-tags", default="", metavar="TAGS",
                     help="comma-separated: it may query and retrieve only studies "
                     "carrying one of these access tags (default: every study)")
    add_setting_flags(add)
    add.set_defaults(func=cmd_ae_add)

    lst = ae_sub.add_parser("list", help="list registered AEs")
    add_setting_flags(lst)
    lst.set_defaults(func=cmd_ae_list)

    rm = ae_sub.add_parser("remove", help="forget an AE")
    rm.add_argument("ae_title", metavar="TITLE")
    add_setting_flags(rm)
    rm.set_defaults(func=cmd_ae_remove)


# ---------------------------------------------------------------------- worklist
def _worklist(settings: Settings) -> Worklist:
    from minipacs.worklist import Worklist

    return Worklist(*_engines(settings))


def _change_order(settings: Settings, command: str,
                  change: Callable[[Orders], WorklistItem]) -> WorklistItem:
    """`change` through the order service (emr/orders.py), as the operator running the
    command: permitted and audited in its own transaction like every other door's."""
    from minipacs.access.principal import cli_principal
    from minipacs.emr.orders import Orders
    from minipacs.node import open_archive

    archive = open_archive(settings)
    try:
        acting = archive.acting_as(cli_principal(command))
        return change(Orders(acting, _worklist(settings)))
    finally:
        archive.close()


def _place_or_update(orders: Orders, item: WorklistItem) -> WorklistItem:
    """A new step, or (an existing --step-id) the step replaced."""
    from minipacs.errors import NotFound

    if item.scheduled_procedure_step_id:
        try:
            orders.worklist.get(item.scheduled_procedure_step_id)
        except NotFound:
            pass
        else:
            return orders.update(item.scheduled_procedure_step_id, item).item
    return orders.place(item).item


_WORKLIST_OPTIONS = {
    # flag: (field, help)
    "--patient-name": ("patient_name", "Family^Given, e.g. 'Nguyễn^Văn An'"),
    "--issuer": ("issuer_of_patient_id", "issuer of the patient ID"),
    "--birth-date": ("patient_birth_date", "YYYYMMDD"),
    "--sex": ("patient_sex", "M, F or O"),
    "--accession": ("accession_number", "accession number of the order"),
    "--referring": ("referring_physician_name", "referring physician, Family^Given"),
    "--study-uid": ("study_instance_uid", "Study Instance UID (generated when absent)"),
    "--procedure-id": ("requested_procedure_id", "defaults to the accession number"),
    "--procedure": ("requested_procedure_description", "requested procedure description"),
    "--modality": ("modality", "CT, MR, US, DX..."),
    "--station-ae": ("scheduled_station_ae_title", "AE title of the modality to do it"),
    "--date": ("scheduled_start_date", "scheduled start date, YYYYMMDD"),
    "--time": ("scheduled_start_time", "scheduled start time, HHMM[SS]"),
    "--performing": ("scheduled_performing_physician_name", "performing physician"),
    "--step-description": ("scheduled_procedure_step_description", "step description"),
    "--step-id": ("scheduled_procedure_step_id", "step ID (generated when absent); "
                  "an existing ID updates that step"),
}


def cmd_worklist_add(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.worklist import Code, ReferencedStudy, WorklistItem

    values = {field: getattr(args, field) for field, _ in _WORKLIST_OPTIONS.values()}
    item = WorklistItem(
        patient_id=args.patient_id, **values,
        referenced_studies=tuple(ReferencedStudy(uid) for uid in args.referenced_study),
        requested_procedure_codes=tuple(Code(*c) for c in args.procedure_code),
        scheduled_protocol_codes=tuple(Code(*c) for c in args.protocol_code),
    )
    try:
        item = _change_order(settings, "worklist-add",
                             lambda orders: _place_or_update(orders, item))
    except MinipacsError as exc:
        print(f"minipacs worklist add: {exc}")
        return 2
    print(f"scheduled {item.scheduled_procedure_step_id}: {item.patient_id} "
          f"{item.modality} on {item.scheduled_station_ae_title or 'any station'} "
          f"{item.scheduled_start_date} {item.scheduled_start_time}".rstrip())
    return 0


def cmd_worklist_list(args: argparse.Namespace, settings: Settings) -> int:
    items = _worklist(settings).items(include_cancelled=args.all)
    if not items:
        print("the worklist is empty")
    for item in items:
        print(f"{item.scheduled_procedure_step_id:<16} {item.status:<9} "
              f"{item.scheduled_start_date:<8} {item.scheduled_start_time:<6} "
              f"{item.modality:<3} {item.scheduled_station_ae_title:<16} {item.patient_id} "
              f"{item.patient_name} {item.accession_number}".rstrip())
    return 0


def cmd_worklist_cancel(args: argparse.Namespace, settings: Settings) -> int:
    try:
        _change_order(settings, "worklist-cancel",
                      lambda orders: orders.cancel(args.step_id).item)
    except MinipacsError as exc:
        print(f"minipacs worklist cancel: {exc}")
        return 1
    print(f"cancelled {args.step_id}")
    return 0


def add_worklist_commands(
    sub: argparse._SubParsersAction[argparse.ArgumentParser], add_setting_flags: AddSettingFlags
) -> None:
    wl = sub.add_parser(
        "worklist", help="manage Modality Worklist items (scheduled procedure steps)",
        description="Scheduled procedure steps that modalities fetch with a worklist "
        "C-FIND. Cancelled steps are kept but no longer offered.",
    )
    wl_sub = wl.add_subparsers(dest="worklist_command", required=True, metavar="ACTION")
    add = wl_sub.add_parser("add", help="schedule a step (or update one with --step-id)")
    add.add_argument("patient_id", metavar="PATIENT_ID")
    for flag, (field, help_text) in _WORKLIST_OPTIONS.items():
        add.add_argument(flag, dest=field, default="", help=help_text)
    code = ("VALUE", "SCHEME", "MEANING")
    add.add_argument("--procedure-code", nargs=3, action="append", default=[], metavar=code,
                     help="a RequestedProcedureCodeSequence item, e.g. 24627-2 LN 'CT Chest' "
                     "(repeatable)")
    add.add_argument("--protocol-code", nargs=3, action="append", default=[], metavar=code,
                     help="a ScheduledProtocolCodeSequence item of the step (repeatable)")
    add.add_argument("--referenced-study", action="append", default=[], metavar="UID",
                     help="a ReferencedStudySequence item: the study's instance UID "
                     "(SOP class Detached Study Management; repeatable)")
    add_setting_flags(add)
    add.set_defaults(func=cmd_worklist_add)

    lst = wl_sub.add_parser("list", help="list scheduled steps")
    lst.add_argument("--all", action="store_true", help="include cancelled steps")
    add_setting_flags(lst)
    lst.set_defaults(func=cmd_worklist_list)

    cancel = wl_sub.add_parser("cancel", help="cancel a step")
    cancel.add_argument("step_id", metavar="STEP_ID")
    add_setting_flags(cancel)
    cancel.set_defaults(func=cmd_worklist_cancel)
