"""The HL7 v2 door: an MLLP listener (`server.py`), one handler module per message type
(`orm.py`, `omi.py`, `adt.py`), onto the same worklist and archive the other doors use.
See docs/emr-integration.md "HL7 v2" and docs/conformance.md."""
