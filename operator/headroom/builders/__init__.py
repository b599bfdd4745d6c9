"""Pure builders: Plan -> desired child objects as plain dicts."""
