"""`minipacs db | verify | backup | restore | delete`: keeping an archive healthy for years.

The commands only translate arguments and print reports; the work is done by
`index.schema` (migrations), `integrity` (verify, rebuild), `backup` and `Archive`.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path

from minipacs.access.principal import cli_principal
from minipacs.config import Settings
from minipacs.errors import MinipacsError

AddFlags = Callable[[argparse.ArgumentParser], None]
Command = Callable[[argparse.Namespace, Settings], int]


def _reporting_errors(command: Command) -> Command:
    """Core errors become one line on stderr and exit status 2, not a traceback."""

    @functools.wraps(command)
    def run(args: argparse.Namespace, settings: Settings) -> int:
        try:
            return command(args, settings)
        except MinipacsError as exc:
            print(f"minipacs {args.command}: {exc}", file=sys.stderr)
            return 2

    return run


@_reporting_errors
def cmd_db(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.index.database import create_index_engine
    from minipacs.index.schema import current_revision, head_revision, new_revision, upgrade

    if args.db_command == "revision":
        path = new_revision(args.message)
        print(f"wrote {path}; review it, then commit it")
        return 0
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_index_engine(settings.index_url, writer=True)
    try:
        if args.db_command == "upgrade":
            before = current_revision(engine)
            upgrade(engine)
            print(f"index at revision {head_revision()} (was {before or 'empty'})")
        else:
            current = current_revision(engine)
            state = "up to date" if current == head_revision() else \
                f"newest is {head_revision()}: run 'minipacs db upgrade'"
            print(f"index at revision {current or 'none (empty)'}, {state}")
    finally:
        engine.dispose()
    return 0


@_reporting_errors
def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.integrity import verify
    from minipacs.node import open_archive
    from minipacs.storage.scratch import stow_spool

    archive = open_archive(settings)
    try:
        report = verify(archive, rebuild_index=args.rebuild_index,
                        actor=cli_principal("verify").actor,
                        stow_spool=stow_spool(settings.data_dir))
        # Not the stored data's health (the exit status), but what a power cut would do
        # to data acknowledged from now on.
        not_durable = archive.durability_problems()
    finally:
        archive.close()
    print(f"{report.checked} instances checked: {len(report.missing)} missing, "
          f"{len(report.corrupt)} corrupt, {len(report.orphans)} orphaned blobs")
    print(f"{len(report.incomplete)} not readable whole (cut short when received); "
          f"{report.temp_removed} temp files and upload spools of interrupted writes "
          "removed")
    for key in report.missing:
        done = " (row removed)" if key in report.forgotten else ""
        print(f"  missing  {key}{done}")
    for key in report.corrupt:
        print(f"  corrupt  {key} (SHA-256 differs from ingest; restore it from a backup)")
    for key in report.orphans:
        done = " (indexed)" if key in report.reindexed else ""
        print(f"  orphan   {key}{done}")
    for key, why in report.incomplete:
        print(f"  not whole {key}: {why} (stored cut short by an older version; have the "
              "sender send it again)")
    for key, why in report.unreadable:
        print(f"  unreadable {key}: {why}")
    for problem in not_durable:
        print(f"  warning  {problem} (docs/deployment.md, \"Durability\")")
    if args.rebuild_index:
        print(f"sequences re-derived for {report.resequenced} rows (patients, studies, series)")
    if not report.healthy and not args.rebuild_index and (report.missing or report.orphans):
        print("run 'minipacs verify --rebuild-index' to repair the index from the blobs")
    return 0 if report.healthy else 1


@_reporting_errors
def cmd_backup(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.backup import backup
    from minipacs.node import open_archive

    archive = open_archive(settings)
    try:
        summary = backup(archive, args.dest)
    finally:
        archive.close()
    print(f"backup written to {summary.folder}: {summary.blobs} instances, "
          f"{summary.blob_bytes} bytes, index revision {summary.revision}")
    return 0


@_reporting_errors
def cmd_restore(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.backup import restore
    from minipacs.node import open_archive

    archive = open_archive(settings)
    try:
        summary = restore(archive, args.src, actor=cli_principal("restore").actor)
        if not archive.wait_uploaded(timeout=3600):
            print(f"{archive.pending_uploads()} blobs still wait in the spool; the next "
                  "'minipacs serve' uploads them")
    finally:
        archive.close()
    print(f"restored {summary.blobs} instances ({summary.blob_bytes} bytes) from "
          f"{summary.folder}")
    return 0


@_reporting_errors
def cmd_delete(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.node import open_archive

    archive = open_archive(settings)
    try:
        for study in args.studies:
            count = archive.acting_as(cli_principal("delete")).delete_study(study)
            print(f"deleted study {study}: {count} instances")
    finally:
        archive.close()
    return 0




def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 add_setting_flags: AddFlags) -> None:
    """Register the maintenance subcommands on the `minipacs` parser."""
    db = sub.add_parser(
        "db", help="index schema: upgrade, show the revision, write a new migration",
        description="Manage the index schema (Alembic migrations in "
        "src/minipacs/index/migrations). 'serve' and 'import' upgrade automatically.",
    )
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    for name, text in (("upgrade", "apply pending migrations to the index"),
                       ("current", "print the index's revision")):
        cmd = db_sub.add_parser(name, help=text, description=text)
        add_setting_flags(cmd)
        cmd.set_defaults(func=cmd_db)
    revision = db_sub.add_parser(
        "revision", help="(developers) write the next migration from index/models.py",
        description="Autogenerate the next numbered migration from what index/models.py "
        "adds to the newest revision. Review the file before committing it.",
    )
    revision.add_argument("-m", "--message", required=True, help="what the revision adds")
    add_setting_flags(revision)
    revision.set_defaults(func=cmd_db)


    verify = sub.add_parser(
        "verify", help="re-hash every blob; report missing, corrupt, cut-short and "
        "orphaned ones",
        description="Check that every indexed instance's blob exists with the SHA-256 "
        "recorded at ingest and is whole (every element's length fits), list blobs no "
        "index row points at, and remove temp files and STOW-RS spools that interrupted "
        "writes left (patient data). Exits 1 when something is wrong. Also warns when "
        "the index database's settings let a power cut lose acknowledged instances "
        "(that alone does not make the exit status 1). Safe while the server runs.",
    )
    verify.add_argument(
        "--rebuild-index", action="store_true",
        help="repair the index from the blobs (the source of truth): index orphaned blobs "
        "from their headers, remove rows whose blob is gone (audited), re-derive the "
        "sequences kept for sequence matching from the stored metadata",
    )
    add_setting_flags(verify)
    verify.set_defaults(func=cmd_verify)

    backup = sub.add_parser(
        "backup", help="write index dump + blobs to a folder (safe while serving)",
        description="Write a consistent backup (index snapshot and the blobs it points "
        "at, re-hashed) to DEST, a new or empty folder.",
    )
    backup.add_argument("dest", type=Path, metavar="DEST")
    add_setting_flags(backup)
    backup.set_defaults(func=cmd_backup)

    restore = sub.add_parser(
        "restore", help="restore a backup folder into an empty index and the blob store",
        description="Put the backup's blobs into the configured blob store, then its rows "
        "into the configured index, which must be empty.",
    )
    restore.add_argument("src", type=Path, metavar="SRC")
    add_setting_flags(restore)
    restore.set_defaults(func=cmd_restore)

    delete = sub.add_parser(
        "delete", help="delete studies: index rows and blobs together, audited",
        description="Delete whole studies by Study Instance UID (retention): rows first, "
        "then blobs; recorded in the audit log.",
    )
    delete.add_argument("studies", nargs="+", metavar="STUDY_UID")
    add_setting_flags(delete)
    delete.set_defaults(func=cmd_delete)
