"""Pure planning: ScalingProfile (+ facts observed in the cluster) -> Plan
(:mod:`.planner`); every child's name and host (:mod:`.names`); the
credentials a build needs (:mod:`.credentials`)."""
