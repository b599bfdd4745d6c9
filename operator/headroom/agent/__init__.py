"""Small programs that run beside the data plane in Headroom's pods (not in
the operator): ``readpool``, the read pool's lag-aware membership agent."""
