"""Floor 1: the WSGI plumbing every piece that acts on requests shares; imports only
:mod:`scalekit.core`, and no web framework.

- ``response``: the app's body closed with a cleanup, a held ``start_response``, a whole
  response collected;
- ``cookies``: the ``Cookie`` header read, ``Set-Cookie`` headers built;
- ``headers``: ``make_private`` for every response that sets a cookie, ``vary_on_cookie``
  for one built from what a cookie names;
- ``pages``: the 503 and error pages, HTML or JSON by ``Accept``, never a traceback;
- ``http``: ``SAFE_METHODS``, ``prefers_json``, ``If-None-Match`` read (``parse_etags``,
  ``etag_matches``);
- ``conditional``: dates, ``Range``/``If-Range``, 304s (``not_modified``) and
  ``Content-Disposition`` for sending a file (static files, uploads' downloads);
- ``encodings``: ``Accept-Encoding`` read and a coding chosen (static files' variants, the
  front end's compression);
- ``environ``: the environ keys the pieces leave their objects under;
- ``context``: ``RequestVar`` (now in :mod:`scalekit.core.context`), re-exported;
- ``views``: ``per_view``, a middleware's decorator for one view;
- ``proxies``: the client's address behind trusted proxies (``X-Forwarded-For``);
- ``guard``: the operators' pages' access rule (a token or allowed addresses), their form
  tokens and security headers (the ticket viewer, the task page);
- ``server``: the small single-threaded server ``scalekit tickets serve`` and ``tasks serve`` run.
"""
