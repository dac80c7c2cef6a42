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
{waiting}{entries}
<footer>Served by <span id="node">{node}</span> (worker {worker}, scalekit {version}){saved_by}
&middot; <span id="hits">{hits}</span> page views on all servers &middot;
<a href="/fail">a page that fails</a></footer>
</main><script src="/static/app.js" defer></script></body></html>
"""

#: The footer's note of the node that saved the session last (none before a first save).
SAVED_BY = ' &middot; session saved by <span id="saved-by">{}</span>'

SIGN_IN = """<form method="post" action="/sign-in" class="account">
<input name="name" placeholder="name" required maxlength="64">
<input name="password" type="password" placeholder="password" required>
<button>Sign in</button> <small>(a new name signs up)</small></form>"""

#: One flex item (a flex container would space each word run and tag apart).
WHO = """<span>Signed in as <b id="user">{user}</b>; <span id="views">{views}</span>
page(s) viewed since.</span>"""

SIGNED_IN = """<div class="account">{who}
<form method="post" action="/sign-out"><button>Sign out</button></form></div>
<form method="post" action="/entries" class="sign" enctype="multipart/form-data">
<textarea name="body" required maxlength="500" placeholder="Leave a message"></textarea>
<label>A picture (optional, {max_mb} MB at most): <input type="file" name="picture"
accept="{accept}"></label>
<button>Sign the guestbook</button>
<button name="then" value="fail" title="the entry and its receipt's task are rolled back">Sign,
then fail</button></form>"""

#: Instead of the forms while the site is read-only: what still works, and why not the rest.
PAUSED = """<div class="account">{who}<p id="paused" class="paused">Changes are paused during
maintenance (signing in or out, signing the guestbook): you can still read the entries.</p>
</div>"""


#: Receipts pending for long: the tasks wait for a worker (or keep failing).
WAITING = """<p id="tasks-waiting" class="banner">A receipt has been pending for {seconds} s:
is a task worker running? <code>make demo</code> starts one beside gunicorn; elsewhere run
<code>scalekit tasks worker</code> (examples/systemd/scalekit-worker.service).</p>"""


def page(*, node: str, worker: int, version: str, hits: int | str, entries: str, user: str | None,
         views: int, saved_by: str | None, flash: str | None, banner: str | None,
         paused: bool, accept: str, max_picture: int,
         pending: float | None = None) -> str:  # fmt: skip
    """The whole page; ``entries`` is already HTML (the cached fragment). ``paused``: the
    site is read-only, so no form is offered (it would only be refused). ``accept``: the
    picture types the form offers, ``max_picture`` the largest picture (bytes).
    ``pending``: seconds the oldest pending receipt has waited, if too long."""
    who = WHO.format(user=escape(user), views=views) if user else ""
    account = (PAUSED if paused else SIGNED_IN if user else SIGN_IN).format(
        who=who, accept=escape(accept), max_mb=f"{max_picture / (1024 * 1024):g}",
    )  # fmt: skip
    return PAGE.format(
        banner=f'<p id="banner" class="banner">{escape(banner)}</p>' if banner else "",
        flash=f'<p id="flash" class="flash">{escape(flash)}</p>' if flash else "",
        waiting=WAITING.format(seconds=round(pending)) if pending else "",
        account=account, entries=entries, node=escape(node), worker=worker,
        version=escape(version), hits=hits,
        saved_by=SAVED_BY.format(escape(saved_by)) if saved_by else "",
    )  # fmt: skip


def entries(rows: list[tuple[int, str, str, str, str | None, str | None, str | None]]) -> str:
    """The list of ``(id, author, when, body, receipt's task id, node that wrote it,
    picture's upload name)``, newest first: the fragment the cache keeps."""
    if not rows:
        return '<ul id="entries"></ul><p>Nobody has signed yet.</p>'
    items = "".join(
        f"<li><b>{escape(author)}</b> <time>{escape(when)}</time>"
        f"{_receipt(id_, task, written_by) if task else ''}<p>{escape(body)}</p>"
        f"{_picture(id_, author, picture) if picture else ''}</li>"
        for id_, author, when, body, task, written_by, picture in rows
    )
    return f'<ul id="entries">{items}</ul>'


def _picture(entry_id: int, author: str, name: str) -> str:
    """The entry's picture, served by the uploads' downloads (``/download/<name>``)."""
    return (f'<img id="picture-{entry_id}" src="/download/{escape(name)}" '
            f'alt="picture by {escape(author)}" loading="lazy">')  # fmt: skip


def _receipt(entry_id: int, task: str, written_by: str | None) -> str:
    """The receipt's state; its title the task (``scalekit tasks show ID`` while pending)."""
    state, text = ("done", f"receipt written by {written_by}") if written_by else (
        "pending", "receipt pending")  # fmt: skip
    return (f' <small class="receipt {state}" id="receipt-{entry_id}" '
            f'title="task {escape(task)}">{escape(text)}</small>')  # fmt: skip
