"""Event-driven associations (`dimse.event_reactor`): our acceptor's reactors block on
the socket and on wake-ups instead of polling every millisecond. What could break: a
wake-up lost (an answer late by the reactors' 1 s safety net, or never), a timer no
longer noticed (idle or PDU timeout), TLS bytes buffered where `select` cannot see them.
"""

from __future__ import annotations

import json
import ssl
import statistics
import time
from collections.abc import Iterator
from pathlib import Path

import pynetdicom
import pytest
from pynetdicom import AE
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_ECHO_RQ
from pynetdicom.dimse_primitives import C_ECHO
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from conftest import ServerProcess
from minipacs.dimse.event_reactor import require_supported_pynetdicom
from test_access_and_tls import _certificate

pytestmark = pytest.mark.door_only  # the DICOM transport's reactors

NETWORK_TIMEOUT = 2.0  # seconds: --dicom-network-timeout of the server here
PDU_TIMEOUT = 1.0  # seconds: --dicom-pdu-timeout
# Under the reactors' 1 s safety-net wait: an answer this late means a lost wake-up.
PROMPT = 0.9


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return _certificate(tmp_path_factory.mktemp("cert"))  # the DICOM TLS tests' own


@pytest.fixture(scope="module")
def timed_server(tmp_path_factory: pytest.TempPathFactory,
                 certificate: tuple[Path, Path]) -> Iterator[tuple[ServerProcess, int]]:
    """A server with short network and PDU timeouts, on a plain and a TLS port."""
    cert, key = certificate
    proc = ServerProcess(tmp_path_factory.mktemp("reactor") / "data", [
        "--no-load-samples", "--dicom-network-timeout", str(NETWORK_TIMEOUT),
        "--dicom-pdu-timeout", str(PDU_TIMEOUT), "--dicom-tls-cert", str(cert),
        "--dicom-tls-key", str(key), "--dicom-tls-port", "0"])
    proc.data_dir.mkdir()
    proc.start()
    tls_port = json.loads((proc.data_dir / "ready.json").read_text())["dicom_tls_port"]
    yield proc, int(tls_port)
    proc.stop()


def associate(server: ServerProcess, port: int | None = None,
              tls: ssl.SSLContext | None = None) -> Association:
    ae = AE(ae_title="REACTORSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port or server.dicom_port, ae_title=server.ae_title,
                         tls_args=(tls, "localhost") if tls else None)
    assert assoc.is_established
    return assoc


def pause_reactor(assoc: Association) -> None:
    """Stop the requestor's own reactor taking answers off its queue (as pynetdicom's
    send_* methods do before they send)."""
    assoc._reactor_checkpoint.clear()
    deadline = time.monotonic() + 10
    while not assoc._is_paused:
        assert time.monotonic() < deadline, "the requestor's reactor did not pause"
        time.sleep(0.001)  # polling the requestor's flag


def echo_requests(assoc: Association, message_ids: range) -> bytes:
    """C-ECHO-RQs (PS3.7 §9.3.5.1) as P-DATA-TF PDUs, back to back in one buffer."""
    context_id = assoc.accepted_contexts[0].context_id
    assert context_id is not None
    wire = b""
    for message_id in message_ids:
        primitive = C_ECHO()
        primitive.MessageID = message_id
        primitive.AffectedSOPClassUID = Verification
        message = C_ECHO_RQ()
        message.primitive_to_message(primitive)
        for p_data in message.encode_msg(context_id, 16382):
            pdu = P_DATA_TF()
            pdu.from_primitive(p_data)
            wire += pdu.encode()
    return wire


def in_state(assoc: Association, state: str, within: float) -> bool:
    deadline = time.monotonic() + within
    while assoc.dul.state_machine.current_state != state:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)  # polling the requestor's state machine
    return True


@pytest.mark.parametrize("transport", ["plain", "tls"])
def test_requests_written_in_one_go_are_all_answered_at_once(
    timed_server: tuple[ServerProcess, int], certificate: tuple[Path, Path], transport: str,
) -> None:
    """30 C-ECHO-RQs in one write (over TLS: one TLS record, decrypted and buffered in
    the SSL object after the first PDU is read, invisible to `select`)."""
    server, tls_port = timed_server
    tls = None
    if transport == "tls":
        tls = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(certificate[0]))
    assoc = associate(server, tls_port if tls else None, tls)
    message_ids = range(1, 31)
    wire = echo_requests(assoc, message_ids)
    assert len(wire) < 16384  # one TLS record holds up to 2^14 bytes (RFC 8446 §5.1)
    pause_reactor(assoc)
    started = time.monotonic()
    assoc.dul.socket.socket.sendall(wire)  # type: ignore[union-attr]
    answers = []
    for _ in message_ids:
        _, response = assoc.dimse.get_msg(block=True)
        assert response is not None, f"answers stopped after {len(answers)}"
        answers.append((int(response.MessageIDBeingRespondedTo),  # type: ignore[union-attr]
                        int(response.Status)))  # type: ignore[union-attr]
    elapsed = time.monotonic() - started
    assoc._reactor_checkpoint.set()
    assoc.release()
    assert answers == [(message_id, 0x0000) for message_id in message_ids]
    assert elapsed < PROMPT, f"30 C-ECHOs answered in {elapsed:.2f} s: a wake-up was lost"


def test_many_requests_on_one_association_are_each_answered_promptly(
    timed_server: tuple[ServerProcess, int],
) -> None:
    server, _ = timed_server
    assoc = associate(server)
    took = []
    for message_id in range(1, 301):
        started = time.monotonic()
        status = assoc.send_c_echo(msg_id=message_id)
        took.append(time.monotonic() - started)
        assert status.Status == 0x0000, message_id
    assoc.release()
    assert assoc.is_released
    assert max(took) < PROMPT, (
        f"slowest C-ECHO {max(took):.3f} s (median {statistics.median(took):.4f} s)")


def test_an_idle_association_is_aborted_when_the_network_timeout_runs_out(
    timed_server: tuple[ServerProcess, int],
) -> None:
    """The association thread now sleeps until something happens: its wait must still
    end when the idle timer runs out (PS3.8 §9.1.5 leaves the network timeout local)."""
    server, _ = timed_server
    assoc = associate(server)
    established = time.monotonic()
    deadline = established + NETWORK_TIMEOUT + 5
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.01)  # polling the association's state
    dropped_after = time.monotonic() - established
    assert assoc.is_aborted, "the server kept a silent association open"
    assert NETWORK_TIMEOUT * 0.9 <= dropped_after < NETWORK_TIMEOUT + 3, dropped_after


def test_a_pdu_left_half_sent_on_an_association_is_dropped_by_the_pdu_timeout(
    timed_server: tuple[ServerProcess, int],
) -> None:
    server, _ = timed_server
    assoc = associate(server)
    wire = echo_requests(assoc, range(1, 2))
    pause_reactor(assoc)
    sent = time.monotonic()
    assoc.dul.socket.socket.sendall(wire[:10])  # type: ignore[union-attr]
    assert in_state(assoc, "Sta1", PDU_TIMEOUT + 3), "a half-sent PDU outlived its timeout"
    assert time.monotonic() - sent >= PDU_TIMEOUT * 0.9  # not before the timer ran out
    assoc._reactor_checkpoint.set()
    # The server keeps serving.
    other = associate(server)
    assert other.send_c_echo().Status == 0x0000
    other.release()


def test_a_pynetdicom_whose_internals_were_not_read_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    require_supported_pynetdicom()  # the installed one is
    monkeypatch.setattr(pynetdicom, "__version__", "99.0.0")
    with pytest.raises(RuntimeError, match=r"pynetdicom 99\.0\.0 is installed"):
        require_supported_pynetdicom()
