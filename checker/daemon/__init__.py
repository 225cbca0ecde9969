"""``betrace run`` and ``betrace backfill``: every rule on its schedule against Tempo, recorded in the store.

``factory`` is the entrance: it builds the components from the config (``run``, ``backfill``,
``open_daemon``); everything below it takes only the config section it uses.
"""
