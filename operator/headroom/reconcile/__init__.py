"""One idempotent reconcile pass: apply desired, prune leftovers, observe, conditions."""
