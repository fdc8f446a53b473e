"""Peers for retrieve tests: a pynetdicom storage SCP on a free port, registration helpers."""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]
from pynetdicom.transport import ThreadedAssociationServer

from conftest import ServerProcess


@dataclass
class StoreSCP:
    """A storage SCP that keeps what it receives: SOP Instance UID → (TS, dataset bytes)."""

    ae_title: str
    server: ThreadedAssociationServer
    received: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    refuse: set[str] = field(default_factory=set)

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()


def start_store_scp(
    syntaxes: dict[str, list[str]] | None = None, refuse: Iterable[str] = (),
    maximum_pdu_size: int | None = None,
) -> StoreSCP:
    """Listen on 127.0.0.1:0. `syntaxes` limits SOP classes and their transfer syntaxes
    (default: every storage SOP class in every syntax); C-STOREs of SOP Instance UIDs
    in `refuse` are answered 0xA700; `maximum_pdu_size` is the maximum PDU length it
    announces (default pynetdicom's, 16382)."""
    title = "D" + uuid.uuid4().hex[:10].upper()
    ae = AE(ae_title=title)
    if maximum_pdu_size is not None:
        ae.maximum_pdu_size = maximum_pdu_size
    ae.add_supported_context(Verification)
    if syntaxes is None:
        for cx in AllStoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    else:
        for sop_class, ts in syntaxes.items():
            ae.add_supported_context(sop_class, ts)
    holder: dict[str, StoreSCP] = {}

    def on_store(event: Any) -> int:
        scp = holder["scp"]
        sop = str(event.request.AffectedSOPInstanceUID)
        if sop in scp.refuse:
            return 0xA700
        ts = str(event.context.transfer_syntax)
        scp.received[sop] = (ts, event.encoded_dataset(include_meta=False))
        return 0x0000

    server = ae.start_server(("127.0.0.1", 0), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    scp = StoreSCP(title, server, refuse=set(refuse))
    holder["scp"] = scp
    return scp


def register_ae(server: ServerProcess, title: str, port: int, **options: Any) -> None:
    body = {"host": "127.0.0.1", "port": port, **options}
    response = httpx.put(f"{server.http_url}/admin/ae/{title}", json=body, timeout=10,
                         headers=server.auth)
    assert response.status_code == 200, response.text
