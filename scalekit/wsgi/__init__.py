"""Floor 1, the WSGI plumbing every piece that acts on requests shares: response headers,
content negotiation of error pages. Imports only :mod:`scalekit.core`."""
