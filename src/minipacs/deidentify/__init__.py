"""De-identified export for research and AI (PS3.15 Annex E).

`profile` says what Table E.1-1 asks for each attribute, `deidentifier` applies it to
one data set, `export` streams studies from the archive into a ZIP and keeps the
re-identification mapping in the index (`models`), never in the ZIP.
"""
