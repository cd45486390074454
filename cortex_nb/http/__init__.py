"""Talking to the service over HTTP: where to connect, credentials, the guarded transport, the
``HTTPClient``, and request traces.

``endpoints`` (regions, URL checks, the ``Endpoint`` value), ``security`` (masking, the
https-or-loopback rule, ``Secret``), ``transport`` (the guarded ``requests`` session, retries and
the shared 429 gate), ``credentials`` (OAuth2 refresh), ``profiles`` (credentials on disk),
``client`` (``HTTPClient``), ``tracing`` (traces through response hooks). Nothing here knows
about query jobs, frames or notebooks.
"""
