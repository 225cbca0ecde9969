"""``betrace run``: every rule on its schedule against Tempo, recorded in the store."""
