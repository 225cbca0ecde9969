"""Compliance evidence: figures per control from the store's ledger, rendered for auditors."""
