"""The only package that talks to the Kubernetes API server, generic: a client
(:mod:`.apiserver`), watch-fed caches (:mod:`.informer`, :mod:`.watch_cache`),
the Lease (:mod:`.leader`). It imports nothing of Headroom's domain: what is
watched and how it is indexed is passed in."""
