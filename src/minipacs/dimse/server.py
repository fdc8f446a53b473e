"""The Application Entity: which services and syntaxes we accept, and the handlers."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import (  # type: ignore[attr-defined]
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from minipacs.archive import Archive
from minipacs.dimse.query_scp import handle_find
from minipacs.dimse.storage_scp import handle_store

log = logging.getLogger(__name__)


def build_ae(ae_title: str) -> AE:
    ae = AE(ae_title=ae_title)
    ae.maximum_associations = 64
    ae.maximum_pdu_size = 0  # no limit on what peers may send us per PDU
    ae.network_timeout = 120
    ae.dimse_timeout = 120
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    # Every storage SOP class pynetdicom knows, in every transfer syntax it knows:
    # we store bytes as sent and never need to decode them to accept them.
    for context in AllStoragePresentationContexts:
        assert context.abstract_syntax is not None
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    for model in (StudyRootQueryRetrieveInformationModelFind,
                  PatientRootQueryRetrieveInformationModelFind):
        ae.add_supported_context(model, ALL_TRANSFER_SYNTAXES)
    return ae


def start_dimse_server(
    archive: Archive, ae_title: str, host: str, port: int
) -> ThreadedAssociationServer:
    """Start accepting associations in background threads; port 0 picks a free port."""
    ae = build_ae(ae_title)
    handlers: list[Any] = [
        (evt.EVT_C_STORE, partial(handle_store, archive=archive)),
        (evt.EVT_C_FIND, partial(handle_find, archive=archive, ae_title=ae_title)),
    ]
    server = ae.start_server((host, port), block=False, evt_handlers=handlers)
    assert server is not None  # block=False always returns the server
    log.info("DICOM %s listening on %s:%d", ae_title, host, server.server_address[1])
    return server
