"""scalekit: grow a web2py-style WSGI application from one process to many servers."""

__version__ = "0.1.0"
