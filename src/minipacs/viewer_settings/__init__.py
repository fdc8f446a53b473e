"""What the viewer remembers on the server: hanging protocols (shipped, admin-edited, own)."""
