"""The Application Entity: which services and syntaxes we accept, and the handlers."""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
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

from minipacs.ae_registry import AERegistry
from minipacs.archive import Archive
from minipacs.dimse.access import (
    AccessPolicy,
    guard_find,
    guard_get,
    guard_n_action,
    guard_store,
)
from minipacs.dimse.commitment_scp import handle_n_action
from minipacs.dimse.peer_options import charset_repair, peer_charsets
from minipacs.dimse.query_scp import handle_find, negotiate_find_options
from minipacs.dimse.retrieve_scp import handle_get, handle_move
from minipacs.dimse.storage_scp import handle_store
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
    ae.maximum_associations = 64
    ae.maximum_pdu_size = 0  # no limit on what peers may send us per PDU
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
    return ae


def handle_any_find(
    event: Any, archive: Archive, worklist: Worklist, ae_title: str
) -> Iterator[tuple[int | Dataset, Any]]:
    """pynetdicom raises one EVT_C_FIND for every FIND SOP class: route by SOP class."""
    if event.request.AffectedSOPClassUID == ModalityWorklistInformationFind:
        return handle_worklist_find(event, worklist, archive.max_query_results)
    return handle_find(event, archive, ae_title)


def start_dimse_server(
    archive: Archive, ae_title: str, host: str, port: int,
    registry: AERegistry,
    worklist: Worklist,
    *,
    registered_aes_only: bool = False,
    ssl_context: ssl.SSLContext | None = None,
) -> ThreadedAssociationServer:
    """Start accepting associations in background threads; port 0 picks a free port.

    `registered_aes_only` turns on access control (see `dimse.access`); `ssl_context`
    makes the port speak TLS (PS3.15 B.1)."""
    ae = build_ae(ae_title)
    policy = AccessPolicy(registry, registered_aes_only)

    def find_right(event: Any) -> str:
        is_worklist = event.request.AffectedSOPClassUID == ModalityWorklistInformationFind
        return "worklist" if is_worklist else "query"

    handlers: list[Any] = [
        (evt.EVT_REQUESTED, policy.on_requested),
        (evt.EVT_SOP_EXTENDED, negotiate_find_options),
        (evt.EVT_C_STORE, guard_store(
            partial(handle_store, archive=archive, repair=charset_repair(registry)), policy)),
        (evt.EVT_C_FIND, guard_find(peer_charsets(
            partial(handle_any_find, archive=archive, worklist=worklist, ae_title=ae_title),
            registry), policy, find_right)),
        (evt.EVT_C_MOVE, partial(handle_move, archive=archive, registry=registry,
                                 access=policy)),
        (evt.EVT_C_GET, guard_get(partial(handle_get, archive=archive), policy)),
        (evt.EVT_N_ACTION, guard_n_action(
            partial(handle_n_action, archive=archive, registry=registry), policy)),
    ]
    server = ae.start_server((host, port), block=False, evt_handlers=handlers,
                             ssl_context=ssl_context)
    assert server is not None  # block=False always returns the server
    log.info("DICOM %s listening on %s:%d%s%s", ae_title, host, server.server_address[1],
             " (TLS)" if ssl_context else "",
             ", registered AEs only" if registered_aes_only else "")
    return server


def tls_context(cert: Path, key: Path, ca: Path | None = None) -> ssl.SSLContext:
    """Server-side TLS for the DICOM port (PS3.15 B.1: TLS 1.2 or later). With `ca`,
    peers must present a certificate it signed."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(certfile=str(cert), keyfile=str(key))
    if ca is not None:
        context.load_verify_locations(cafile=str(ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context
