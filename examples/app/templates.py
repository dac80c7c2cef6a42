"""The demo's HTML, as plain strings; every value is escaped by the caller's helpers here."""

from __future__ import annotations

from html import escape

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>scalekit guestbook</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="/static/style.css"></head>
<body><main>
<h1>Guestbook</h1>
{banner}{flash}
{account}
<h2>Entries</h2>
{entries}
<footer>Served by <span id="node">{node}</span> (scalekit {version}) &middot;
<span id="hits">{hits}</span> page views on all servers &middot;
<a href="/fail">a page that fails</a></footer>
</main><script src="/static/app.js" defer></script></body></html>
"""

SIGN_IN = """<form method="post" action="/sign-in" class="account">
<input name="name" placeholder="name" required maxlength="64">
<input name="password" type="password" placeholder="password" required>
<button>Sign in</button> <small>(a new name signs up)</small></form>"""

SIGNED_IN = """<div class="account">Signed in as <b id="user">{user}</b>;
<span id="views">{views}</span> page(s) viewed since.
<form method="post" action="/sign-out"><button>Sign out</button></form></div>
<form method="post" action="/entries" class="sign">
<textarea name="body" required maxlength="500" placeholder="Leave a message"></textarea>
<button>Sign the guestbook</button></form>"""


def page(*, node: str, version: str, hits: int, entries: str, user: str | None,
         views: int, flash: str | None, banner: str | None) -> str:  # fmt: skip
    """The whole page; ``entries`` is already HTML (the cached fragment)."""
    account = SIGNED_IN.format(user=escape(user), views=views) if user else SIGN_IN
    return PAGE.format(
        banner=f'<p id="banner" class="banner">{escape(banner)}</p>' if banner else "",
        flash=f'<p id="flash" class="flash">{escape(flash)}</p>' if flash else "",
        account=account, entries=entries, node=escape(node), version=escape(version),
        hits=hits,
    )  # fmt: skip


def entries(rows: list[tuple[str, str, str]]) -> str:
    """The list of ``(author, when, body)``, newest first: the fragment the cache keeps."""
    if not rows:
        return '<ul id="entries"></ul><p>Nobody has signed yet.</p>'
    items = "".join(
        f"<li><b>{escape(author)}</b> <time>{escape(when)}</time><p>{escape(body)}</p></li>"
        for author, when, body in rows
    )
    return f'<ul id="entries">{items}</ul>'
