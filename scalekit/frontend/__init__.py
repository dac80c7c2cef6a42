"""The request front end: what App Engine's frontend does for every request, as one WSGI
layer (``FrontendMiddleware``) or a decorator for one view (``with_frontend``)."""
