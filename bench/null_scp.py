"""A pynetdicom storage SCP that stores nothing: the ceiling of a pynetdicom receiver.

    python bench/null_scp.py PORT
"""

from __future__ import annotations

import socket
import sys
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
from pynetdicom.transport import ThreadedAssociationServer


class NoDelayServer(ThreadedAssociationServer):
    """Same socket option minipacs sets on its accepted connections."""

    def get_request(self) -> tuple[socket.socket, Any]:
        connection, address = super().get_request()
        connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return connection, address


def main() -> None:
    ae = AE(ae_title="NULLSCP")
    ae.maximum_associations = 64
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
    server = ae.make_server(("127.0.0.1", int(sys.argv[1])),
                            evt_handlers=[(evt.EVT_C_STORE, lambda event: 0x0000)],
                            server_class=NoDelayServer)
    server.serve_forever()


if __name__ == "__main__":
    main()
