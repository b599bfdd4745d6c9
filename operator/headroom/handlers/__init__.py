"""The operator process (watches, queue, workers, leader election) and the
admission webhook: wiring only; decisions live in the engine and the planner."""
