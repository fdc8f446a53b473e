"""`minipacs user | token | audit`: accounts, API tokens and the audit trail from the
command line (the server's operator acts as the system principal, audited by OS user).

Names are stable: scripts and the tests call them. `token create` prints the token once,
on the last line of stdout.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from minipacs.access.accounts import AccountPolicy, Accounts
from minipacs.access.principal import cli_principal
from minipacs.access.roles import ACCOUNT_ROLES, Role
from minipacs.access.tags import parse_tags
from minipacs.config import Settings
from minipacs.maintenance_cli import _reporting_errors

AddFlags = Callable[[argparse.ArgumentParser], None]
ROLES = ", ".join(r.value for r in ACCOUNT_ROLES)


def _accounts(settings: Settings) -> Accounts:
    from minipacs.admin_cli import _engines
    from minipacs.index.database import create_schema

    reader, writer = _engines(settings)
    create_schema(writer)
    return Accounts(reader, writer, AccountPolicy.from_settings(settings))


def _when(value: object) -> str:
    return f"{value:%Y-%m-%d %H:%M}" if value is not None else "-"


# ---------------------------------------------------------------------- user
@_reporting_errors
def cmd_user(args: argparse.Namespace, settings: Settings) -> int:
    accounts = _accounts(settings)
    actor = cli_principal(f"user-{args.user_command}").actor
    if args.user_command == "add":
        password = None
        if args.password_stdin:
            password = sys.stdin.readline().rstrip("\r\n")
        user, one_time = accounts.add_user(args.name, args.role, password=password,
                                           full_name=args.full_name, actor=actor,
                                           access_tags=parse_tags(args.tags),
                                           practising_certificate=args.practising_certificate)
        print(f"created user {user.username} ({user.role.value})"
              + (f", access tags {','.join(user.access_tags)}" if user.access_tags else "")
              + (f", practising certificate {user.practising_certificate}"
                 if user.practising_certificate else ""))
        if one_time:
            print(f"one-time password (to be changed at first login): {one_time}")
    elif args.user_command == "list":
        users = accounts.users()
        if not users:
            print("no accounts yet (minipacs user add NAME --role ROLE)")
        for u in users:
            state = "disabled: " + u.disabled_reason if u.disabled else (
                "locked" if u.locked_until else "active")
            print(f"{u.username:24} {u.role.value:13} {state:28} last login "
                  f"{_when(u.last_login_at)}" + ("  (must change password)"
                                                  if u.must_change_password else "")
                  + ("  (second factor)" if u.totp_enabled else "")
                  + (f"  tags {','.join(u.access_tags)}" if u.access_tags else ""))
    elif args.user_command == "set-tags":
        u = accounts.set_user_access_tags(args.name, parse_tags(args.tags), actor=actor)
        print(f"user {u.username}: access tags "
              f"{','.join(u.access_tags) or '(none: every study)'}")
    elif args.user_command == "set-certificate":
        u = accounts.set_practising_certificate(args.name, args.code, actor=actor)
        print(f"user {u.username}: practising certificate "
              f"{u.practising_certificate or '(none)'}")
    elif args.user_command in ("disable", "enable"):
        u = accounts.set_disabled(args.name, args.user_command == "disable",
                                  reason=args.reason if args.user_command == "disable" else "",
                                  actor=actor)
        print(f"user {u.username} {'disabled' if u.disabled else 'enabled'}")
    elif args.user_command == "reset-password":
        password = accounts.reset_password(args.name, actor=actor)
        print(f"one-time password for {args.name} (to be changed at next login): {password}")
    elif args.user_command == "totp":
        if args.disable:
            u = accounts.disable_totp(args.name, actor=actor)
            print(f"second factor of {u.username} removed")
            return 0
        secret, uri = accounts.enroll_totp(args.name, actor=actor)
        print(f"second factor (TOTP, 6 digits every 30 s) enrolled for {args.name}; "
              "shown only now: add it to the authenticator app")
        print(f"otpauth URI: {uri}")
        print(f"secret (base32): {secret}")
    return 0


# ---------------------------------------------------------------------- token
@_reporting_errors
def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    accounts = _accounts(settings)
    actor = cli_principal(f"token-{args.token_command}").actor
    if args.token_command == "create":
        token, info = accounts.create_token(args.name, args.role,
                                            expires_days=args.expires_days, actor=actor,
                                            access_tags=parse_tags(args.tags))
        print(f"token {info.id} for {info.name} ({info.role.value}), expires "
              f"{_when(info.expires_at)}; it is shown only now, keep it safe:")
        print(token)
    elif args.token_command == "list":
        tokens = accounts.tokens()
        if not tokens:
            print("no API tokens (minipacs token create NAME --role ROLE)")
        for t in tokens:
            print(f"{t.id:5} {t.name:24} {t.role.value:13} created {_when(t.created_at)} "
                  f"expires {_when(t.expires_at)} last used {_when(t.last_used_at)}"
                  + ("  REVOKED" if t.revoked else "")
                  + (f"  tags {','.join(t.access_tags)}" if t.access_tags else ""))
    elif args.token_command == "set-tags":
        t = accounts.set_token_access_tags(args.id, parse_tags(args.tags), actor=actor)
        print(f"token {t.id} ({t.name}): access tags "
              f"{','.join(t.access_tags) or '(none: every study)'}")
    elif args.token_command == "revoke":
        t = accounts.revoke_token(args.id, actor=actor)
        print(f"token {t.id} ({t.name}) revoked")
    return 0


# ---------------------------------------------------------------------- audit
@_reporting_errors
def cmd_audit(args: argparse.Namespace, settings: Settings) -> int:
    from minipacs.audit.chain import verify
    from minipacs.audit.checkpoints import (
        load_key,
        verify_against_checkpoints,
        write_checkpoint,
    )
    from minipacs.node import open_archive

    archive = open_archive(settings)
    try:
        key = load_key(settings.audit_key, settings.data_dir)
        if args.audit_command == "prune":
            days = args.older_than_days or settings.audit_retention_days
            if not days:
                print("minipacs audit prune: give --older-than-days N (or set "
                      "MINIPACS_AUDIT_RETENTION_DAYS)", file=sys.stderr)
                return 2
            pruned = archive.acting_as(cli_principal("audit-prune")).prune_audit(days)
            print(f"{pruned} audit events older than {days} days pruned")
            return 0
        if args.audit_command == "checkpoint":
            cp = write_checkpoint(archive.engine, archive.store, key)
            print(f"checkpoint at event {cp.seq}" if cp else "the audit trail is empty")
            return 0
        report = verify(archive.engine)
        if not report.ok:
            print(f"audit trail BROKEN at event {report.first_broken}: {report.problem}")
            return 1
        checked, problem = verify_against_checkpoints(archive.engine, archive.store, key)
        if problem:
            print(f"audit trail BROKEN: {problem}")
            return 1
        cp = write_checkpoint(archive.engine, archive.store, key)
        print(f"audit trail intact: {report.events} events, head {report.head_seq} "
              f"{report.head_hash[:16]}…, {checked} checkpoints agree"
              + (f"; new checkpoint at {cp.seq}" if cp else ""))
        return 0
    finally:
        archive.close()


def add_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 add_setting_flags: AddFlags) -> None:
    user = sub.add_parser("user", help="manage accounts (people)",
                          description=f"Accounts of people. Roles: {ROLES}.")
    user_sub = user.add_subparsers(dest="user_command", required=True, metavar="ACTION")
    add = user_sub.add_parser("add", help="create an account",
                              description="Create an account. Without --password-stdin a "
                              "one-time password is printed, to be changed at first login.")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, type=Role, choices=ACCOUNT_ROLES,
                     metavar="ROLE", help=f"one of: {ROLES}")
    add.add_argument("--full-name", default="", help="shown in the viewer and on reports")
    add.add_argument("--password-stdin", action="store_true",
                     help="read the password from the first line of standard input")
    add.add_argument("--tags", default="", metavar="TAGS",
                     help="comma-separated access tags: the account sees only studies "
                     "carrying one of them (default: every study)")
    add.add_argument("--practising-certificate", default="", metavar="CODE",
                     help="practising-certificate code (mã chứng chỉ hành nghề), named as "
                     "the reading doctor in insurance claims (docs/emr-integration.md)")
    set_certificate = user_sub.add_parser(
        "set-certificate", help="record (or clear with '') a practising-certificate code",
        description="Set the account's practising-certificate code (mã chứng chỉ hành "
        "nghề); reports it signs from now on carry it into insurance claims "
        "(MA_BS_DOC_KQ). An empty CODE ('') clears it. Audited as an account change.")
    set_certificate.add_argument("name", metavar="NAME")
    set_certificate.add_argument("code", metavar="CODE", help="e.g. 003539/HCM-CCHN, or ''")
    add_setting_flags(set_certificate)
    set_certificate.set_defaults(func=cmd_user)
    set_tags = user_sub.add_parser(
        "set-tags", help="limit an account to studies with these access tags",
        description="Replace the account's access tags; an empty TAGS ('') lifts the "
        "limit. Takes effect on every node within seconds (docs/security.md).")
    set_tags.add_argument("name", metavar="NAME")
    set_tags.add_argument("tags", metavar="TAGS", help="comma-separated, or ''")
    add_setting_flags(set_tags)
    set_tags.set_defaults(func=cmd_user)
    for name, helptext in (("list", "list accounts"),
                           ("disable", "disable an account and end its sessions"),
                           ("enable", "enable (and unlock) an account"),
                           ("reset-password", "print a new one-time password")):
        parser = user_sub.add_parser(name, help=helptext)
        if name != "list":
            parser.add_argument("name", metavar="NAME")
        if name == "disable":
            parser.add_argument("--reason", default="by admin (CLI)")
        add_setting_flags(parser)
        parser.set_defaults(func=cmd_user)
    totp = user_sub.add_parser(
        "totp", help="enrol (or --disable) a TOTP second factor",
        description="Enrol a second factor (TOTP, RFC 6238): prints the otpauth:// URI and "
        "the base32 secret once, active at once; replaces an earlier one. The secret is "
        "kept in the index: protect database backups.")
    totp.add_argument("name", metavar="NAME")
    totp.add_argument("--disable", action="store_true", help="remove the second factor")
    add_setting_flags(totp)
    totp.set_defaults(func=cmd_user)
    add_setting_flags(add)
    add.set_defaults(func=cmd_user)

    token = sub.add_parser("token", help="manage API tokens (EMR, scripts)",
                           description="Bearer tokens for systems. Only a digest is kept: "
                           "a token is printed once, when created.")
    token_sub = token.add_subparsers(dest="token_command", required=True, metavar="ACTION")
    create = token_sub.add_parser("create", help="create a token (printed on the last line)")
    create.add_argument("name", metavar="NAME")
    create.add_argument("--role", required=True, type=Role, choices=ACCOUNT_ROLES,
                        metavar="ROLE", help=f"one of: {ROLES}")
    create.add_argument("--expires-days", type=int, metavar="N",
                        help="valid for N days (default: until revoked)")
    create.add_argument("--tags", default="", metavar="TAGS",
                        help="comma-separated access tags: the token sees only studies "
                        "carrying one of them (default: every study)")
    lst = token_sub.add_parser("list", help="list tokens")
    revoke = token_sub.add_parser("revoke", help="revoke a token by its id (see list)")
    revoke.add_argument("id", type=int, metavar="ID")
    token_tags = token_sub.add_parser(
        "set-tags", help="limit a token to studies with these access tags ('' lifts it)")
    token_tags.add_argument("id", type=int, metavar="ID")
    token_tags.add_argument("tags", metavar="TAGS", help="comma-separated, or ''")
    for parser in (create, lst, revoke, token_tags):
        add_setting_flags(parser)
        parser.set_defaults(func=cmd_token)

    audit = sub.add_parser("audit", help="check the audit trail",
                           description="The audit trail is hash-chained; `verify` walks it "
                           "and compares it with the signed checkpoints kept in the blob "
                           "store. Exit 0: intact; 1: broken (the first broken event is named).")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    for name, helptext in (("verify", "check the whole chain and the checkpoints"),
                           ("checkpoint", "sign the chain's head into the blob store"),
                           ("prune", "delete events older than the retention (recorded)")):
        parser = audit_sub.add_parser(name, help=helptext)
        if name == "prune":
            parser.add_argument("--older-than-days", type=int, metavar="N",
                                help="default: MINIPACS_AUDIT_RETENTION_DAYS")
        add_setting_flags(parser)
        parser.set_defaults(func=cmd_audit)
