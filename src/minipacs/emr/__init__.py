"""Keeping the EMR in sync: the change feed (`changes.py`) and the FHIR push
(`fhir_push.py`, `fhir_client.py`); their tables are in `models.py`."""
