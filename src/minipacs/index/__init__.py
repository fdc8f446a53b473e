"""The SQL index: what is stored, where, and how to find it."""
