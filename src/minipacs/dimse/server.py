"""The Application Entity: which services and syntaxes we accept, and the handlers."""

from __future__ import annotations

import logging
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from minipacs.access.roles import Action
from minipacs.ae_registry import AERegistry
from minipacs.archive import Archive
from minipacs.dimse.access import (
    AccessPolicy,
    acting_for_peer,
    guard_find,
    guard_get,
    guard_n_action,
    guard_store,
)
from minipacs.dimse.cancel import record_cancel
from minipacs.dimse.commitment_scp import handle_n_action
from minipacs.dimse.mpps_scp import handle_mpps_create, handle_mpps_set
from minipacs.dimse.outgoing import OutgoingTransport
from minipacs.dimse.peer_options import charset_repair, peer_charsets
from minipacs.dimse.query_scp import handle_find, negotiate_find_options
from minipacs.dimse.retrieve_scp import handle_get, handle_move
from minipacs.dimse.storage_scp import handle_store
from minipacs.dimse.transport_limits import (
    ConnectionLedger,
    TransportLimits,
    association_limit,
    reject_local_limit,
    restart_idle_timer,
    start_guarded_server,
)
from minipacs.dimse.worklist_scp import handle_worklist_find
from minipacs.worklist import Worklist

log = logging.getLogger(__name__)


# Acceptors pick, within one proposed context, the first syntax of their own list
# (pynetdicom does). Explicit VR Little Endian first keeps VRs (PS3.5 §7.1) and is what
# most instances are stored in, so a C-GET requester offering several uncompressed
# syntaxes gets bytes as stored; Implicit VR Little Endian, the universal fallback, last.
STORAGE_SYNTAX_PREFERENCE = [
    ExplicitVRLittleEndian,
    *[ts for ts in ALL_TRANSFER_SYNTAXES
      if ts not in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)],
    ImplicitVRLittleEndian,
]


def build_ae(ae_title: str) -> AE:
    ae = AE(ae_title=ae_title)
    # Association and PDU limits are set per listener (`transport_limits`).
    ae.network_timeout = 120
    ae.dimse_timeout = 120
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    # Every storage SOP class pynetdicom knows, in every transfer syntax it knows:
    # we store bytes as sent and never need to decode them to accept them. Both roles:
    # a C-GET requester proposes to be the storage SCP on its own association
    # (PS3.7 D.3.3.4, SCP/SCU role selection).
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, STORAGE_SYNTAX_PREFERENCE,
                                 scu_role=True, scp_role=True)
    for model in (StudyRootQueryRetrieveInformationModelFind,
                  PatientRootQueryRetrieveInformationModelFind,
                  StudyRootQueryRetrieveInformationModelMove,
                  PatientRootQueryRetrieveInformationModelMove,
                  StudyRootQueryRetrieveInformationModelGet,
                  PatientRootQueryRetrieveInformationModelGet,
                  ModalityWorklistInformationFind):
        ae.add_supported_context(model, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(StorageCommitmentPushModel, ALL_TRANSFER_SYNTAXES)
    ae.add_supported_context(ModalityPerformedProcedureStep, ALL_TRANSFER_SYNTAXES)
    return ae


def handle_any_find(
    event: Any, archive: Archive, worklist: Worklist, ae_title: str
) -> Iterator[tuple[int | Dataset, Any]]:
    """pynetdicom raises one EVT_C_FIND for every FIND SOP class: route by SOP class."""
    if event.request.AffectedSOPClassUID == ModalityWorklistInformationFind:
        principal = archive.permit(None, Action.QUERY)
        archive.audit("query", principal.actor, detail="Modality Worklist C-FIND",
                      role=principal.role.value, source=principal.source)
        return handle_worklist_find(event, worklist, archive.max_query_results)
    return handle_find(event, archive, ae_title)


@dataclass
class DicomListeners:
    """The running DICOM listeners: plain TCP, TLS, or both (each optional)."""

    plain: ThreadedAssociationServer | None
    tls: ThreadedAssociationServer | None

    @property
    def plain_port(self) -> int | None:
        return int(self.plain.server_address[1]) if self.plain is not None else None

    @property
    def tls_port(self) -> int | None:
        return int(self.tls.server_address[1]) if self.tls is not None else None

    def shutdown(self) -> None:
        for server in (self.plain, self.tls):
            if server is not None:
                server.shutdown()


def start_dimse_server(
    archive: Archive, ae_title: str, host: str, port: int | None,
    registry: AERegistry,
    worklist: Worklist,
    *,
    registered_aes_only: bool = False,
    ssl_context: ssl.SSLContext | None = None,
    tls_port: int | None = None,
    limits: TransportLimits | None = None,
    outgoing: OutgoingTransport | None = None,
    listening: dict[str, socket.socket] | None = None,
) -> DicomListeners:
    """Start accepting associations in background threads; port 0 picks a free port.

    `registered_aes_only` turns on access control (see `dimse.access`). With
    `ssl_context` and no `tls_port`, `port` speaks TLS (PS3.15 B.1); with both, `port`
    stays plain TCP and `tls_port` speaks TLS; `port` None: no plain listener.
    `outgoing` says how to reach registered AEs marked `tls`. `listening`: the sockets
    to accept on instead of binding ("dicom_port", "dicom_tls_port"; the workers of
    `serve --workers N` share their supervisor's)."""
    limits = limits or TransportLimits()
    # Process-wide in pynetdicom: send_c_store given a file path streams it in PDU-sized
    # pieces; only our C-GET/C-MOVE sub-operations pass paths (retrieve_scp.StoredFile).
    _config.STORE_SEND_CHUNKED_DATASET = True
    # pynetdicom formats every C-FIND/C-MOVE/C-GET identifier, and (its "standard"
    # handlers) every PDU and DIMSE message sent or received, for INFO/DEBUG lines
    # whether or not that log is on. It is not: cli.py keeps pynetdicom at WARNING, and
    # our handlers log each request themselves. The identifiers were ~0.4 ms of a C-FIND
    # with 5 matches; the handlers, less than the noise of one.
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False
    _config.LOG_HANDLER_LEVEL = "none"
    ae = build_ae(ae_title)
    policy = AccessPolicy(registry, registered_aes_only, audit=archive.record_audit)
    over_limit = association_limit(limits.max_associations)

    def on_requested(event: Any) -> None:
        problem = over_limit(event)
        if problem:
            reject_local_limit(event, problem)
            return
        policy.on_requested(event)

    def find_right(event: Any) -> str:
        is_worklist = event.request.AffectedSOPClassUID == ModalityWorklistInformationFind
        return "worklist" if is_worklist else "query"

    handlers: list[Any] = [
        (evt.EVT_REQUESTED, on_requested),
        (evt.EVT_SOP_EXTENDED, negotiate_find_options),
        (evt.EVT_DIMSE_RECV, record_cancel),
        # The network timeout measures the peer's silence, not our time answering it.
        (evt.EVT_DIMSE_SENT, restart_idle_timer),
        (evt.EVT_ACCEPTED, policy.on_accepted),
        (evt.EVT_C_STORE, guard_store(acting_for_peer(
            handle_store, archive, policy, repair=charset_repair(policy.entry)), policy)),
        (evt.EVT_C_FIND, guard_find(peer_charsets(acting_for_peer(
            handle_any_find, archive, policy, worklist=worklist, ae_title=ae_title),
            policy.entry), policy, find_right)),
        (evt.EVT_C_MOVE, acting_for_peer(handle_move, archive, policy, registry=registry,
                                         access=policy, outgoing=outgoing)),
        (evt.EVT_C_GET, guard_get(acting_for_peer(handle_get, archive, policy), policy)),
        (evt.EVT_N_ACTION, guard_n_action(acting_for_peer(
            handle_n_action, archive, policy, registry=registry, outgoing=outgoing),
            policy)),
        # MPPS (PS3.4 Annex F): the modality that stores reports its steps.
        (evt.EVT_N_CREATE, guard_n_action(acting_for_peer(
            handle_mpps_create, archive, policy, worklist=worklist), policy, "store")),
        (evt.EVT_N_SET, guard_n_action(acting_for_peer(
            handle_mpps_set, archive, policy, worklist=worklist), policy, "store")),
    ]
    ledger = ConnectionLedger(limits)
    plain_port = port if (ssl_context is None or tls_port is not None) else None
    secure_port = tls_port if tls_port is not None else (port if ssl_context else None)
    listeners = DicomListeners(None, None)
    if plain_port is not None:
        listeners.plain = start_guarded_server(
            ae, (host, plain_port), handlers, limits, ledger,
            listening=(listening or {}).get("dicom_port"))
    if secure_port is not None:
        listeners.tls = start_guarded_server(
            ae, (host, secure_port), handlers, limits, ledger, ssl_context=ssl_context,
            listening=(listening or {}).get(
                "dicom_tls_port" if tls_port is not None else "dicom_port"))
    log.info("DICOM %s listening on %s, plain port %s, TLS port %s%s (max %d associations, "
             "PDUs up to %d bytes)", ae_title, host, listeners.plain_port or "off",
             listeners.tls_port or "off",
             ", registered AEs only" if registered_aes_only else "",
             limits.max_associations, limits.max_pdu_length)
    return listeners
