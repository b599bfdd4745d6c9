"""Pure builders: Plan -> desired child objects as plain dicts, one module per
component; :mod:`.desired` is the entry point the reconcile pass calls."""
