"""The Application Entity: which services and syntaxes we accept, and the handlers."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from functools import partial
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
from minipacs.dimse.commitment_scp import handle_n_action
from minipacs.dimse.query_scp import handle_find
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
    registry: AERegistry | None = None,
    worklist: Worklist | None = None,
) -> ThreadedAssociationServer:
    """Start accepting associations in background threads; port 0 picks a free port."""
    ae = build_ae(ae_title)
    registry = registry or AERegistry(archive.engine, archive.write_engine)
    worklist = worklist or Worklist(archive.engine, archive.write_engine)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, partial(handle_store, archive=archive)),
        (evt.EVT_C_FIND, partial(handle_any_find, archive=archive, worklist=worklist,
                                 ae_title=ae_title)),
        (evt.EVT_C_MOVE, partial(handle_move, archive=archive, registry=registry)),
        (evt.EVT_C_GET, partial(handle_get, archive=archive)),
        (evt.EVT_N_ACTION, partial(handle_n_action, archive=archive, registry=registry)),
    ]
    server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    assert server is not None  # block=False always returns the server
    log.info("DICOM %s listening on %s:%d", ae_title, host, server.server_address[1])
    return server
