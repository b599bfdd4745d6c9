"""The reconcile pass, one idempotent pass per profile on observed state:
:mod:`.reconciler` calls the phases (facts, inputs, live checks, apply,
observe, outcome), each a module of its own; :mod:`.watches` declares what is
owned, read and watched; :mod:`.probe` is the periodic probe its instances
(:mod:`.primary_limits`, :mod:`.replica_lag`, :mod:`.bucket_check`) share."""
