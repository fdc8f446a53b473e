"""The HTTP door: DICOMweb (PS3.18), admin API and the viewer's static files."""
