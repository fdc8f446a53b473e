"""`minipacs` command line: serve, import, and archive administration.

Every setting in `Settings` is a flag of each subcommand that opens the archive, and a
MINIPACS_ environment variable; a flag wins over the environment.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from minipacs import __version__
from minipacs.config import Settings


def _add_setting_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "settings", "each also read from the MINIPACS_<NAME> environment variable"
    )
    for name, field in Settings.model_fields.items():
        flag = "--" + name.replace("_", "-")
        env = "MINIPACS_" + name.upper()
        default = field.default
        help_text = f"{field.description} [env {env}; default: {default}]"
        annotation = field.annotation
        kwargs: dict[str, Any] = {"dest": name, "default": None, "help": help_text}
        if annotation is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif typing.get_origin(annotation) is typing.Literal:
            kwargs["choices"] = typing.get_args(annotation)
        elif annotation is int:
            kwargs["type"] = int
            kwargs["metavar"] = "N"
        elif annotation in (Path, Path | None):
            kwargs["type"] = Path
            kwargs["metavar"] = "PATH"
        else:
            kwargs["metavar"] = "TEXT"
        group.add_argument(flag, **kwargs)


def settings_from(args: argparse.Namespace) -> Settings:
    overrides = {
        name: getattr(args, name)
        for name in Settings.model_fields
        if getattr(args, name, None) is not None
    }
    return Settings(**overrides)


# Commands that may start an archive in a data folder that does not exist yet; the others
# work on an existing one and refuse the default folder when it is not there.
_MAY_MAKE_DATA_DIR = frozenset({"serve", "import", "restore", "db"})


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)-7s %(name)s: %(message)s"
    )
    # pynetdicom narrates every PDU at INFO; keep its warnings and errors only.
    logging.getLogger("pynetdicom").setLevel(max(logging.WARNING, logging.getLevelName(level)))
    logging.getLogger("alembic").setLevel(max(logging.WARNING, logging.getLevelName(level)))


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.node import serve

    serve(settings)
    return 0


def cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from minipacs.access.principal import cli_principal
    from minipacs.folder_import import import_files, iter_files
    from minipacs.node import open_archive

    console = Console(stderr=True)
    missing = [p for p in args.paths if not p.exists()]
    if missing:
        console.print(f"[red]No such file or folder: {', '.join(map(str, missing))}")
        return 2
    if settings.log_level != "DEBUG":
        # One line per instance would scroll the progress bar away; the summary says it all.
        logging.getLogger("minipacs.archive").setLevel(logging.WARNING)
    archive = open_archive(settings).acting_as(cli_principal("import"))
    files = list(iter_files(args.paths))
    with Progress(
        TextColumn("importing"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TextColumn("{task.description}"), console=console, disable=args.quiet,
    ) as progress:
        task = progress.add_task("", total=len(files))

        def advance(path: Path) -> None:
            progress.update(task, advance=1, description=path.name[-40:])

        summary = import_files(archive, files, on_progress=advance)
    print(
        f"{summary.stored} stored, {summary.duplicates} duplicates, "
        f"{summary.replaced} replaced, {len(summary.rejected)} rejected, "
        f"{len(summary.skipped)} skipped (of {len(files)} files) "
        f"into the archive in {settings.data_dir.resolve()}"
    )
    for path, reason in summary.rejected:
        print(f"  rejected {path}: {reason}")
    for path, reason in summary.skipped:
        print(f"  skipped  {path}: {reason}")
    return 1 if summary.rejected else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="minipacs",
        description="minipacs: DICOM archive (C-STORE/C-FIND, DICOMweb) and web viewer.",
    )
    parser.add_argument("--version", action="version", version=f"minipacs {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = sub.add_parser(
        "serve", help="run the DICOM and HTTP servers",
        description="Run minipacs: DICOM (C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET, Modality "
        "Worklist, MPPS, Storage Commitment) on DICOM_PORT, DICOMweb, FHIR, the admin API and "
        "the viewer on HTTP_PORT, HL7 v2 on HL7_PORT when set. On first start with an empty "
        "archive, the sample studies in SAMPLE_DIR are imported.",
    )
    _add_setting_flags(serve)
    serve.set_defaults(func=cmd_serve)

    imp = sub.add_parser(
        "import", help="import DICOM files or folders (CDs with DICOMDIR too)",
        description="Import every DICOM file under the given files and folders. Prints a "
        "summary; exits 1 when some files were rejected.",
    )
    imp.add_argument("paths", nargs="+", type=Path, metavar="PATH")
    imp.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    _add_setting_flags(imp)
    imp.set_defaults(func=cmd_import)

    from minipacs.admin_cli import add_ae_commands, add_worklist_commands

    add_ae_commands(sub, _add_setting_flags)
    add_worklist_commands(sub, _add_setting_flags)

    from minipacs.maintenance_cli import add_commands as add_maintenance_commands

    add_maintenance_commands(sub, _add_setting_flags)

    from minipacs.accounts_cli import add_commands as add_account_commands

    add_account_commands(sub, _add_setting_flags)
    from minipacs.patient_cli import add_commands as add_patient_commands
    add_patient_commands(sub, _add_setting_flags)
    from minipacs.study_cli import add_commands as add_study_commands
    add_study_commands(sub, _add_setting_flags)

    from minipacs.fhir_push_cli import add_commands as add_fhir_push_commands

    add_fhir_push_commands(sub, _add_setting_flags)
    from minipacs.export_cli import add_export_command

    add_export_command(sub, _add_setting_flags)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Everything minipacs writes (the index, blobs, backups, restored copies, exports,
    # keys) holds patient data or secrets: readable by the account that runs it only,
    # whatever the shell's umask (Debian's 022 made backups world-readable).
    os.umask(0o077)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from(args)
    except ValidationError as exc:
        for error in exc.errors():
            where = ".".join(str(p) for p in error["loc"])
            print(f"minipacs: setting {where}: {error['msg']}", file=sys.stderr)
        return 2
    if (args.command not in _MAY_MAKE_DATA_DIR and not settings.data_dir.exists()
            and "data_dir" not in settings.model_fields_set):  # the default, not chosen
        # Run from another folder, the default ./minipacs-data named a new, empty
        # archive: a token or account made there was silently not the server's.
        print(f"minipacs: no data folder at {settings.data_dir.resolve()}: '{args.command}' "
              "works on the archive 'minipacs serve' keeps. Run it from the folder serve "
              "runs in, or give the --data-dir (MINIPACS_DATA_DIR) and other settings "
              "serve uses.", file=sys.stderr)
        return 2
    _configure_logging(settings.log_level)
    result: int = args.func(args, settings)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
