"""`minipacs db | verify | backup | restore | delete`: keeping an archive healthy for years.

The commands only translate arguments and print reports; the work is done by
`index.schema` (migrations), `integrity` (verify, rebuild) and `backup`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from minipacs.config import Settings

AddFlags = Callable[[argparse.ArgumentParser], None]


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

