"""FHIR R4: index records and stored DICOM JSON as FHIR resources, search parameters as
DICOM filters, the CapabilityStatement. Pure mapping: the door is `web/fhir.py`."""
