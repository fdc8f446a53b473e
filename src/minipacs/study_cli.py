"""`minipacs study tags UID [--add TAGS] [--remove TAGS]`: the access tags a study carries
(docs/security.md, "Access tags"). The operator acts as the system principal, audited by
OS user, through the same core call as `POST /admin/studies/{uid}/access-tags`."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from minipacs.access.principal import cli_principal
from minipacs.access.tags import parse_tags
from minipacs.config import Settings
from minipacs.maintenance_cli import _reporting_errors

AddFlags = Callable[[argparse.ArgumentParser], None]


@_reporting_errors
def cmd_study_tags(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.node import open_archive

    archive = open_archive(settings)
    try:
        acting = archive.acting_as(cli_principal("study-tags"))
        added, removed = parse_tags(args.add), parse_tags(args.remove)
        if added or removed:
            tags = acting.change_study_access_tags(args.study_uid, add=sorted(added),
                                                   remove=sorted(removed))
        else:
            tags = acting.study_access_tags(args.study_uid)
        print(f"study {args.study_uid}: access tags {','.join(tags) or '(none)'}")
        return 0
    finally:
        archive.close()


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 add_setting_flags: AddFlags) -> None:
    study = sub.add_parser("study", help="a study's access tags",
                           description="Studies carry access tags; users, tokens and AEs "
                           "limited to tags see only studies carrying one of theirs.")
    ssub = study.add_subparsers(dest="study_command", required=True, metavar="ACTION")
    tags = ssub.add_parser("tags", help="show, add or remove a study's access tags")
    tags.add_argument("study_uid", metavar="STUDY_UID")
    tags.add_argument("--add", default="", metavar="TAGS", help="comma-separated")
    tags.add_argument("--remove", default="", metavar="TAGS", help="comma-separated")
    add_setting_flags(tags)
    tags.set_defaults(func=cmd_study_tags)
