"""Links to the electronic medical record (issue 12): patient identity and reconciliation
(`reconciliation`), orders ⇄ the Modality Worklist (`orders`), orders completed by arriving
images (`order_links`); keeping the EMR in sync: the change feed (`changes`) and the FHIR
push (`fhir_push`, `fhir_client`, `push_bundle`), their tables in `models`."""
