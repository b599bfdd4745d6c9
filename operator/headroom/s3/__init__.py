"""Talks to S3 servers (the builtin provider's versitygw, an external bucket's
endpoint): the only package that does. ``sigv4`` signs (pure), ``client``
sends; no SDK, so the operator image carries no AWS library."""
