"""The audit trail: hash-chained events, verification, checkpoints kept outside the index."""
