"""minipacs: a PACS-lite DICOM archive with DIMSE, DICOMweb and a web viewer."""

__version__ = "0.1.0"
