"""Links to the electronic medical record: patient identity and reconciliation (more to come:
orders and the worklist, the change feed, FHIR push)."""
