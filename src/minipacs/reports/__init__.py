"""Radiology reports: written and signed by a radiologist, stored with the study as DICOM
(Encapsulated PDF + Basic Text SR), exposed as FHIR DiagnosticReport (issue #14)."""
