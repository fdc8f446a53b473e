"""`minipacs export --deidentify`: studies → a ZIP of de-identified DICOM files.

The command only translates arguments and prints the summary; `deidentify.export`
does the work. A plain (identified) export is not offered here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable
from pathlib import Path

from minipacs.access.principal import cli_principal
from minipacs.config import Settings
from minipacs.errors import MinipacsError

AddFlags = Callable[[argparse.ArgumentParser], None]


def cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from minipacs.deidentify.export import export_deidentified
    from minipacs.deidentify.profile import ProfileOptions
    from minipacs.dicom.matching import Filter
    from minipacs.node import open_archive
    from minipacs.web.query_params import parse_qido

    if not args.deidentify:
        print("minipacs export: only de-identified export is offered; pass --deidentify "
              "(PS3.15 Basic Profile)", file=sys.stderr)
        return 2
    selections = sum(bool(x) for x in (args.studies, args.patient_id, args.query))
    if selections != 1:
        print("minipacs export: name the studies one way: STUDY_UID..., --patient-id or "
              "--query KEY=VALUE", file=sys.stderr)
        return 2
    options = ProfileOptions(
        retain_longitudinal_modified_dates=args.retain_dates_shifted,
        retain_device_identity=args.retain_device_identity,
        clean_descriptors=args.clean_descriptors,
    )
    console = Console(stderr=True)
    if settings.log_level != "DEBUG":
        logging.getLogger("minipacs.archive").setLevel(logging.WARNING)
    try:
        studies: list[str] | Filter
        if args.studies:
            studies = list(args.studies)
        else:
            pairs = [("PatientID", args.patient_id)] if args.patient_id else \
                [_key_value(text) for text in args.query]
            studies = parse_qido(pairs).filter
        archive = open_archive(settings).acting_as(cli_principal("export"))
        try:
            with Progress(
                TextColumn("exporting"), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), console=console, disable=args.quiet,
            ) as progress:
                task = progress.add_task("", total=None)

                def advance(done: int, total: int) -> None:
                    progress.update(task, completed=done, total=total)

                summary = export_deidentified(
                    archive, studies, options, args.out, actor=cli_principal("export").actor,
                    include_burned_in=args.include_burned_in, on_progress=advance)
        finally:
            archive.close()
    except MinipacsError as exc:
        print(f"minipacs export: {exc}", file=sys.stderr)
        return 2
    print(f"export {summary.export_id}: {summary.instances} instances of {summary.studies} "
          f"studies written to {summary.path} ({summary.bytes_written} bytes), "
          f"{len(summary.refused)} refused, {len(summary.flagged)} flagged")
    print(f"  profile: {'; '.join(options.names())}")
    for item in summary.refused:
        print(f"  refused {item.sop_instance_uid}: {item.reason} (check the pixels, then "
              "--include-burned-in)")
    for item in summary.flagged:
        print(f"  flagged {item.sop_instance_uid}: {item.reason}; included as asked")
    return 1 if summary.refused else 0


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        from minipacs.errors import QueryError

        raise QueryError(f"--query {text!r} must be KEY=VALUE, e.g. StudyDate=20240101-")
    return key.strip(), value




def add_export_command(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                       add_setting_flags: AddFlags) -> None:
    """Register `minipacs export` on the `minipacs` parser."""
    export = sub.add_parser(
        "export", help="export studies as a ZIP of de-identified DICOM files (research, AI)",
        description="Write the selected studies, de-identified under the PS3.15 Basic "
        "Application Level Confidentiality Profile, into a new ZIP. UIDs are remapped "
        "consistently within the export; the re-identification mapping stays in the "
        "archive. Ultrasound, Secondary Capture and BurnedInAnnotation=YES instances are "
        "refused unless --include-burned-in. Exits 1 when some instances were refused.",
    )
    export.add_argument("studies", nargs="*", metavar="STUDY_UID")
    export.add_argument("--patient-id", metavar="ID", help="every study of this PatientID")
    export.add_argument("--query", action="append", default=[], metavar="KEY=VALUE",
                        help="QIDO-RS style study matching, repeatable "
                        "(e.g. StudyDate=20240101-20241231, ModalitiesInStudy=CT)")
    export.add_argument("--out", type=Path, required=True, metavar="FILE.zip",
                        help="the ZIP to create (must not exist)")
    export.add_argument("--deidentify", action="store_true",
                        help="required: apply the PS3.15 Basic Profile")
    export.add_argument("--retain-dates-shifted", action="store_true",
                        help="Retain Longitudinal Temporal Information with Modified Dates: "
                        "shift every date by one random offset per patient")
    export.add_argument("--retain-device-identity", action="store_true",
                        help="Retain Device Identity: keep station names, serial numbers")
    export.add_argument("--clean-descriptors", action="store_true",
                        help="Clean Descriptors: keep descriptions with identifying values "
                        "cut out (instead of removing them)")
    export.add_argument("--include-burned-in", action="store_true",
                        help="also export instances that may show identifying text in their "
                        "pixels (US, SC, OT, BurnedInAnnotation=YES); they are flagged")
    export.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    add_setting_flags(export)
    export.set_defaults(func=cmd_export)
