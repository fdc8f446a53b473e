"""Who may associate, and which services each calling AE may use.

With `dicom_registered_aes_only` on, an association from a calling AE title that is not
in the registry (or, when the entry is pinned, not from its host) is rejected with
A-ASSOCIATE-RJ: rejected-permanent, DICOM UL service-user, calling AE title not
recognized (PS3.8 §9.3.4). A registered AE asking for a service outside its rights gets
status 0x0124, Refused: Not Authorised (PS3.7 C.5.x general statuses).
"""

from __future__ import annotations

import logging
import socket
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.dataset import Dataset

from minipacs.access.principal import Principal, ae_principal
from minipacs.access.roles import Action
from minipacs.ae_registry import AERegistry, RemoteAE
from minipacs.archive import Archive
from minipacs.audit.chain import AuditRecord
from minipacs.dimse.status import status_dataset

log = logging.getLogger(__name__)

NOT_AUTHORISED = 0x0124
# A-ASSOCIATE-RJ (PS3.8 Table 9-21): result, source, reason/diagnostic
_REJECTED_PERMANENT = 0x01
_SERVICE_USER = 0x01
_CALLING_AE_NOT_RECOGNIZED = 0x03


def _addresses(host: str) -> set[str]:
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return set()


# What each AE-registry right lets a calling AE do, as actions of the permission matrix.
ACTIONS_OF_RIGHT: dict[str, frozenset[Action]] = {
    "store": frozenset({Action.STORE}),
    "query": frozenset({Action.QUERY}),
    "retrieve": frozenset({Action.DOWNLOAD, Action.VIEW}),
    "worklist": frozenset({Action.QUERY}),
    "commitment": frozenset({Action.VIEW}),
}


class AccessPolicy:
    """Access decisions for one DICOM server; `enforce` False lets everyone do anything
    a DICOM node may do. `audit` records each association accepted or refused."""

    def __init__(self, registry: AERegistry, enforce: bool,
                 audit: Callable[[AuditRecord], None] | None = None) -> None:
        self.registry = registry
        self.enforce = enforce
        self.audit = audit
        # One registry look-up per association, not per message (a C-STORE of 500
        # instances is 500 messages, a worklist poll one C-FIND per minute on the same
        # association); a changed entry applies from the next association.
        self._entries: weakref.WeakKeyDictionary[Any, RemoteAE | None] = \
            weakref.WeakKeyDictionary()
        self._principals: weakref.WeakKeyDictionary[Any, Principal] = \
            weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def entry(self, event: Any) -> RemoteAE | None:
        """The calling AE's registry entry (None: not registered), read once per
        association: by admission when it runs, else by the first message's handler."""
        with self._lock:
            if event.assoc in self._entries:
                return self._entries[event.assoc]
        return self._remember(event.assoc, str(event.assoc.requestor.ae_title).strip())

    def _remember(self, assoc: Any, calling: str) -> RemoteAE | None:
        ae = self.registry.get(calling)
        with self._lock:
            self._entries[assoc] = ae
        return ae

    def principal(self, event: Any) -> Principal:
        """The calling AE as the principal of this association's core calls."""
        with self._lock:
            known = self._principals.get(event.assoc)
        if known is not None:
            return known
        principal = self._principal(event)
        with self._lock:
            self._principals[event.assoc] = principal
        return principal

    def _principal(self, event: Any) -> Principal:
        calling = str(event.assoc.requestor.ae_title).strip()
        actions: frozenset[Action] | None = None
        # Its entry also carries access tags (`access/tags.py`), which hold whether or
        # not unregistered AEs are admitted.
        ae = self.entry(event)
        if self.enforce:
            actions = frozenset().union(*(ACTIONS_OF_RIGHT.get(r, frozenset())
                                          for r in (ae.rights if ae else ())))
        return ae_principal(calling, str(event.assoc.requestor.address), actions,
                            access_tags=(ae.access_tags or None) if ae else None,
                            store_tags=ae.store_tags if ae else frozenset())

    def on_accepted(self, event: Any) -> None:
        """EVT_ACCEPTED: every association is an audit event (PS3.15 A.5.3.9 in spirit)."""
        if self.audit is not None:
            p = self.principal(event)
            self.audit(AuditRecord("association", p.actor, p.role.value, p.source,
                                   detail=f"accepted, called AE "
                                   f"{str(event.assoc.acceptor.ae_title).strip()}"))

    def admission_problem(self, calling: str, address: str, assoc: Any) -> str:
        """Why an association from `calling` at `address` is refused ("" = admitted).
        The entry read is kept for `assoc`'s later messages."""
        if not self.enforce:
            return ""
        ae = self._remember(assoc, calling)
        if ae is None:
            return f"calling AE title {calling!r} is not registered"
        if ae.pin_ip and address not in _addresses(ae.host):
            return f"{calling!r} is registered at {ae.host}, not {address}"
        return ""

    def on_requested(self, event: Any) -> None:
        """EVT_REQUESTED: reject unknown or misplaced calling AEs before negotiation."""
        calling = str(event.assoc.requestor.primitive.calling_ae_title).strip()
        address = str(event.assoc.requestor.address)
        problem = self.admission_problem(calling, address, event.assoc)
        if problem:
            log.warning("association from %s@%s rejected: %s", calling, address, problem)
            if self.audit is not None:
                self.audit(AuditRecord("association", f"ae:{calling}", "dicom-node", address,
                                       outcome="refused", detail=problem))
            event.assoc.acse.send_reject(_REJECTED_PERMANENT, _SERVICE_USER,
                                         _CALLING_AE_NOT_RECOGNIZED)
            # As pynetdicom does for its own rejections: stop the DUL once the
            # A-ASSOCIATE-RJ is out, before the connection is closed.
            event.assoc.kill()

    def refusal(self, event: Any, right: str) -> Dataset | None:
        """Status 0x0124 when the calling AE lacks `right`, else None."""
        if not self.enforce:
            return None
        calling = str(event.assoc.requestor.ae_title).strip()
        # Read now, not once per association: a right withdrawn in the registry stops
        # the next request on an association already open (a worklist poller keeps one).
        ae: RemoteAE | None = self.registry.get(calling)
        if ae is not None and ae.may(right):
            return None
        log.warning("%s refused to %s: no '%s' right in the AE registry", right, calling,
                    right)
        return status_dataset(NOT_AUTHORISED, f"{calling} has no '{right}' right")


def guard_store(handler: Callable[..., Any], policy: AccessPolicy) -> Callable[..., Any]:
    def guarded(event: Any) -> Any:
        return policy.refusal(event, "store") or handler(event)
    return guarded


def guard_find(handler: Callable[..., Iterator[Any]], policy: AccessPolicy,
               right: Callable[[Any], str]) -> Callable[..., Iterator[Any]]:
    def guarded(event: Any) -> Iterator[Any]:
        refused = policy.refusal(event, right(event))
        if refused is not None:
            yield refused, None
            return
        yield from handler(event)
    return guarded


def guard_get(handler: Callable[..., Iterator[Any]], policy: AccessPolicy
              ) -> Callable[..., Iterator[Any]]:
    def guarded(event: Any) -> Iterator[Any]:
        refused = policy.refusal(event, "retrieve")
        if refused is not None:
            yield 1  # pynetdicom wants a sub-operation count before any status
            yield refused, None
            return
        yield from handler(event)
    return guarded


def guard_n_action(handler: Callable[..., Any], policy: AccessPolicy,
                   right: str = "commitment") -> Callable[..., Any]:
    """An N- service handler refused (0x0124) to a calling AE without `right`."""
    def guarded(event: Any) -> Any:
        refused = policy.refusal(event, right)
        return (refused, None) if refused is not None else handler(event)
    return guarded


def acting_for_peer(handler: Callable[..., Any], archive: Archive, policy: AccessPolicy,
                    **kwargs: Any) -> Callable[..., Any]:
    """`handler(event, archive=...)` with the archive acting for the calling AE, so every
    core call of the DIMSE door carries its principal (and is checked and audited)."""

    def call(event: Any) -> Any:
        return handler(event, archive=archive.acting_as(policy.principal(event)), **kwargs)

    return call
