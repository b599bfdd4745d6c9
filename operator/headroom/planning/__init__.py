"""Pure planning: ScalingProfile (+ facts observed in the cluster) -> Plan."""
