"""`minipacs ae ...`: the remote AE registry from the command line.

Registered by `cli.build_parser`; each command opens the archive's index the settings
name, makes one registry call and prints the outcome.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from minipacs.ae_registry import RIGHTS, AERegistry, RemoteAE, parse_rights
from minipacs.config import Settings
from minipacs.errors import MinipacsError

AddSettingFlags = Callable[[argparse.ArgumentParser], None]


def _registry(settings: Settings) -> AERegistry:
    from minipacs.node import open_archive

    archive = open_archive(settings)
    return AERegistry(archive.engine, archive.write_engine)


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
        options = [o for o, on in (("pin-ip", ae.pin_ip), ("ascii", ae.ascii_responses)) if on]
        if ae.default_charset:
            options.append(f"charset={ae.default_charset}")
        if ae.charset_remap_from:
            options.append(f"remap={ae.charset_remap_from}->{ae.charset_remap_to}")
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
    add.add_argument("--description", default="")
    add_setting_flags(add)
    add.set_defaults(func=cmd_ae_add)

    lst = ae_sub.add_parser("list", help="list registered AEs")
    add_setting_flags(lst)
    lst.set_defaults(func=cmd_ae_list)

    rm = ae_sub.add_parser("remove", help="forget an AE")
    rm.add_argument("ae_title", metavar="TITLE")
    add_setting_flags(rm)
    rm.set_defaults(func=cmd_ae_remove)
