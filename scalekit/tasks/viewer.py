"""TaskViewer: a small WSGI admin app to watch the deferred tasks and retry the dead ones.

Pages (relative to where it is mounted): ``/`` every queue with its number of tasks in each
state; ``/queue/<queue>`` its running, delayed, waiting and dead tasks (up to ``limit`` of
each: callable, arguments, attempts, eta, the last line of a dead one's traceback);
``/task/<queue>/<id>`` one task decoded, with its traceback. A dead task has a *Retry*
button (``POST /retry/<queue>/<id>``: waiting again, its attempts reset); with
``purge=True`` a queue's page has a button that deletes its dead tasks
(``POST /purge/<queue>``). A GET never changes anything; a POST needs the form token of a
page the viewer rendered (a signed hidden field: another site cannot make the operator's
browser post one).

Access (:class:`scalekit.wsgi.guard.Guard`) as the ticket viewer: a client address in
``allowed``, or the ``token`` as ``Authorization: Bearer`` or once as ``?token=`` (a signed
cookie from then on). The pages show the tasks' arguments, which may hold personal data:
they are for operators. Errors of the viewer itself are logged, never shown.
"""

from __future__ import annotations

import html
import logging
import re
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING
from urllib.parse import quote

from scalekit.core.errors import CorruptData, InvalidArgument, StoreUnavailable
from scalekit.tasks.engines.base import DEAD, DELAYED, RUNNING, STATES, WAITING, TaskInfo
from scalekit.tasks.errors import NotDeferrable, PayloadTooLarge
from scalekit.tasks.facade import check_queue
from scalekit.wsgi.guard import Guard, admin_page, form_fields

if TYPE_CHECKING:
    from scalekit.tasks.facade import Tasks

__all__ = ["TaskViewer", "retry_dead"]

log = logging.getLogger("scalekit.tasks")

_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
#: The sections of a queue's page, in order.
SECTIONS = (RUNNING, DELAYED, WAITING, DEAD)
_e = html.escape


def retry_dead(tasks: Tasks, queue: str, task_id: str) -> str | None:
    """Make the dead task ``task_id`` of ``queue`` waiting again, its attempts reset (its
    payload signed anew); None when done, else why not."""
    found = tasks.engine.find(task_id, queue)
    if found is None or found.state != DEAD:
        return "it is no longer dead" if found else "there is no such task"
    try:
        task = tasks.decode(found.payload)
        task.attempts = 0
        payload = tasks.reencode(task, found.payload)
    except (CorruptData, NotDeferrable, PayloadTooLarge) as exc:
        return f"its payload cannot be rewritten: {exc}"
    return None if tasks.engine.revive(queue, task_id, payload) else "it is no longer dead"


class TaskViewer:
    """Watch and retry the tasks of ``tasks`` (a :class:`~scalekit.tasks.Tasks`: its secret
    decodes the payloads); see the module docstring. ``secret`` signs the form tokens when
    several processes serve the viewer with ``allowed`` addresses and no token."""

    def __init__(
        self,
        tasks: Tasks,
        *,
        allowed: Iterable[str] = (),
        token: str | None = None,
        secret: str | bytes | None = None,
        limit: int = 50,
        purge: bool = False,
    ):
        self.guard = Guard("tasks", "TaskViewer", allowed=allowed, token=token, secret=secret)
        self.tasks, self.limit, self.purge = tasks, limit, purge

    def __call__(self, environ: dict, start_response: Callable) -> Iterable[bytes]:
        granted = self.guard.admit(environ)
        if granted is None:
            refused = "<p>Access to the tasks is refused.</p>"
            return admin_page("403 Forbidden", "Forbidden", refused).send(start_response)
        page = _Page(environ.get("SCRIPT_NAME", "").rstrip("/"), self.guard.form_token())
        path = environ.get("PATH_INFO", "") or "/"
        try:
            if environ.get("REQUEST_METHOD", "GET") == "POST":
                status, title, body, extra = self._change(environ, page, path)
            else:
                status, title, body, extra = self._show(page, path)
        except StoreUnavailable as exc:
            status, title, body, extra = "503 Service Unavailable", "Engine unavailable", "", ()
            body = f"{page.nav()}<p>{_e(str(exc))}</p>"
        except Exception:  # logged with its traceback, never shown
            log.exception("tasks viewer: %s failed", path)
            status, title, body, extra = "500 Internal Server Error", "Internal error", "", ()
        answer = admin_page(status, title, body, *granted, *extra, forms=True)
        return answer.send(start_response)

    def _show(self, page: _Page, path: str) -> tuple[str, str, str, tuple]:
        """The status, title, body and extra headers of the page at ``path`` (a GET)."""
        parts = path.strip("/").split("/")
        if path == "/":
            return "200 OK", "Tasks", page.counts(self.tasks.engine.counts()), ()
        if parts[0] == "queue" and len(parts) == 2 and _queue(parts[1]):
            engine = self.tasks.engine
            listed = {state: engine.tasks(parts[1], state, self.limit) for state in SECTIONS}
            body = page.queue(parts[1], listed, self.tasks, self.limit, self.purge)
            return "200 OK", f"Queue {parts[1]}", body, ()
        if parts[0] == "task" and len(parts) == 3 and _queue(parts[1]) and _ID.match(parts[2]):
            found = self.tasks.engine.find(parts[2], parts[1])
            if found is not None:
                return "200 OK", f"Task {found.task_id}", page.task(found, self.tasks), ()
        if parts[0] in ("retry", "purge"):
            body = page.nav() + "<p>Retrying and purging are buttons (a POST).</p>"
            return "405 Method Not Allowed", "Method not allowed", body, (("Allow", "POST"),)
        body = page.nav() + "<p>No such page, queue or task.</p>"
        return "404 Not Found", "Not found", body, ()

    def _change(self, environ: dict, page: _Page, path: str) -> tuple[str, str, str, tuple]:
        """The answer to a POST: a retry or a purge, then a redirect to the queue's page."""
        parts = path.strip("/").split("/")
        target = len(parts) >= 2 and _queue(parts[1])
        retrying = target and parts[0] == "retry" and len(parts) == 3 and _ID.match(parts[2])
        purging = target and parts[0] == "purge" and len(parts) == 2 and self.purge
        if not (retrying or purging):
            return "404 Not Found", "Not found", page.nav() + "<p>Nothing to post to here.</p>", ()
        fields = form_fields(environ)
        if fields is None or not self.guard.form_ok(fields.get("csrf")):
            body = page.nav() + "<p>The form has expired or is not this viewer's: reload it.</p>"
            return "403 Forbidden", "Refused", body, ()
        queue, client = parts[1], environ.get("REMOTE_ADDR", "?")
        if parts[0] == "purge":
            count = self.tasks.engine.purge(queue, DEAD)
            log.info("tasks viewer: %d dead task(s) of %s purged by %s", count, queue, client)
        else:
            problem = retry_dead(self.tasks, queue, parts[2])
            if problem is not None:
                body = f"{page.nav()}<p>Task {_e(parts[2])} not retried: {_e(problem)}.</p>"
                return "409 Conflict", "Not retried", body, ()
            log.info("tasks viewer: task %s of %s retried by %s", parts[2], queue, client)
        location = page.root + "/queue/" + quote(queue)
        return (
            "303 See Other",
            "Done",
            page.link("/queue/" + queue, queue),
            (("Location", location),),
        )


def _queue(name: str) -> bool:
    try:
        return bool(check_queue(name))
    except InvalidArgument:
        return False


class _Page:
    """HTML fragments for one request: links keep the mount point (never the token)."""

    def __init__(self, root: str, form_token: str):
        self.root, self.form_token = root, form_token

    def link(self, path: str, text: str) -> str:
        return f'<a href="{_e(self.root + quote(path))}">{_e(text)}</a>'

    def button(self, path: str, label: str) -> str:
        """A form posting to ``path`` with the form token."""
        return (
            f'<form method="post" action="{_e(self.root + quote(path))}">'
            f'<input type="hidden" name="csrf" value="{_e(self.form_token)}">'
            f"<button>{_e(label)}</button></form>"
        )

    def nav(self) -> str:
        return f"<nav>{self.link('/', 'Queues')}</nav>"

    def counts(self, counts: dict[str, dict[str, int]]) -> str:
        head = "<tr><th>queue</th>" + "".join(f"<th>{state}</th>" for state in STATES) + "</tr>"
        rows = "".join(
            f"<tr><td>{self.link('/queue/' + queue, queue)}</td>"
            + "".join(f"<td>{counts[queue].get(state, 0)}</td>" for state in STATES)
            + "</tr>"
            for queue in sorted(counts)
        )
        total = sum(sum(by_state.values()) for by_state in counts.values())
        return f"<p>{total} task(s) in {len(counts)} queue(s)</p><table>{head}{rows}</table>"

    def queue(
        self, queue: str, listed: dict[str, list[TaskInfo]], tasks: Tasks, limit: int, purge: bool
    ) -> str:
        parts = [self.nav()]
        for state, found in listed.items():
            more = f" (the first {limit})" if len(found) >= limit else ""
            parts.append(f"<h2>{state.capitalize()}: {len(found)}{more}</h2>")
            if state == DEAD and found and purge:
                parts.append(f"<p>{self.button('/purge/' + queue, 'Delete every dead task')}</p>")
            if found:
                parts.append(self._rows(found, tasks))
        return "".join(parts)

    def _rows(self, found: list[TaskInfo], tasks: Tasks) -> str:
        head = (
            "<tr><th>task</th><th>callable and arguments</th><th>attempts</th>"
            "<th>eta (UTC)</th><th>runs</th><th>error</th></tr>"
        )
        rows = []
        for info in found:
            call, attempts = _call(info, tasks, 300)
            error = (info.error or "").rstrip().rpartition("\n")[2]
            retry = self.button(f"/retry/{info.queue}/{info.task_id}", "Retry")
            rows.append(
                f"<tr><td>{self.link(f'/task/{info.queue}/{info.task_id}', info.task_id)}</td>"
                f"<td><code>{_e(call)}</code></td><td>{_e(attempts)}</td>"
                f"<td>{_when(info.eta)}</td><td>{info.deliveries}</td>"
                f"<td><code>{_e(error)}</code>{retry if info.state == DEAD else ''}</td></tr>"
            )
        return f"<table>{head}{''.join(rows)}</table>"

    def task(self, info: TaskInfo, tasks: Tasks) -> str:
        facts = {"queue": info.queue, "state": info.state, "name": info.name or "-"}
        facts |= {"eta (UTC)": _when(info.eta), "handed out": f"{info.deliveries} time(s)"}
        try:
            task = tasks.decode(info.payload)
        except CorruptData as exc:
            facts["payload"] = f"cannot be read: {exc}"
        else:
            facts |= {
                "callable": task.function,
                "bound to": "-" if task.target is None else _repr(task.target, 2000),
                "args": _repr(task.args, 5000),
                "kwargs": _repr(task.kwargs, 5000),
                "attempts": f"{task.attempts} of {task.max_attempts}",
                "timeout": task.timeout or "-",
                "created (UTC)": _when(task.created),
                "request id": task.request_id or "-",
            }
        rows = "".join(
            f"<tr><th>{_e(k)}</th><td><code>{_e(str(v))}</code></td></tr>" for k, v in facts.items()
        )
        parts = [self.nav(), f"<p>{self.link('/queue/' + info.queue, 'Queue ' + info.queue)}</p>"]
        parts.append(f"<table>{rows}</table>")
        if info.state == DEAD:
            parts.append(f"<p>{self.button(f'/retry/{info.queue}/{info.task_id}', 'Retry')}</p>")
        if info.error:
            parts.append(f"<h2>Traceback</h2><pre>{_e(info.error)}</pre>")
        return "".join(parts)


def _call(info: TaskInfo, tasks: Tasks, width: int) -> tuple[str, str]:
    """The call a task makes (``module:function(args, kwargs)``, cut to ``width``) and its
    attempts; what is wrong instead when its payload cannot be read."""
    try:
        task = tasks.decode(info.payload)
    except CorruptData:
        return "(unreadable payload)", "?"
    arguments = [_repr(arg, width) for arg in task.args]
    arguments += [f"{key}={_repr(value, width)}" for key, value in task.kwargs.items()]
    call = _repr(f"{task.function}({', '.join(arguments)})", width, str)
    return call, f"{task.attempts}/{task.max_attempts}"


def _repr(value: object, width: int, show: Callable[[object], str] = repr) -> str:
    """``show(value)`` cut to ``width`` characters; a value whose ``__repr__`` fails is
    named by its type (an app's object must not take the page down)."""
    try:
        text = show(value)
    except Exception:  # noqa: BLE001 - whatever the app's __repr__ raises
        text = f"<{type(value).__name__} that cannot be shown>"
    return text if len(text) <= width else text[: width - 3] + "..."


def _when(moment: float | None) -> str:
    return "-" if moment is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment))
