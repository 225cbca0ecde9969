"""Rule files, the rule language and its readings."""
