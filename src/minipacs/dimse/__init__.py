"""The DIMSE door: pynetdicom handlers that translate DICOM network services to `Archive`."""
