"""Pure DICOM helpers: no I/O beyond the bytes handed in."""
