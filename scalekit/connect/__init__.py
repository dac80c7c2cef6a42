"""Floor 1, one connector per technology, opened by URL: :mod:`~scalekit.connect.redis`,
:mod:`~scalekit.connect.memcache`, :mod:`~scalekit.connect.sql` (pydal) and
:mod:`~scalekit.connect.files`. Imports only :mod:`scalekit.core`; every piece may import it.
"""
