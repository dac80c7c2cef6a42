"""``scalekit tasks worker|info|list|show ID|retry ID|purge|relay|serve``: deferred tasks.

``scalekit tasks --store redis://cache:6379/0 --app shop worker --queue mail --concurrency 4``
The engine URL comes from ``--store`` or ``$SCALEKIT_TASKS``, the secret that signs the
payloads from ``--secret-file`` or ``$SCALEKIT_TASKS_SECRET`` (never the command line: it
would show in ``ps``), the app from ``--app`` or ``$SCALEKIT_APP``. Each action is a
function registered with :func:`action`; a new one is a function and its arguments.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

from scalekit.cli import EXIT_FAILURE, EXIT_OK
from scalekit.cli.arguments import duration, non_negative, positive
from scalekit.cli.tickets import visible
from scalekit.cli.viewers import run_viewer, serve_arguments, viewer_token
from scalekit.core.errors import ConfigError, CorruptData
from scalekit.core.urls import mask

NAME = "tasks"
HELP = "run deferred tasks (worker) and look at, retry or purge them"
STORE_VARIABLE = "SCALEKIT_TASKS"
SECRET_VARIABLE = "SCALEKIT_TASKS_SECRET"
APP_VARIABLE = "SCALEKIT_APP"
TOKEN_VARIABLE = "SCALEKIT_TASKS_TOKEN"
TICKETS_VARIABLE = "SCALEKIT_TICKET_STORE"
LOG_FORMAT = "%(asctime)s %(process)d %(name)s %(levelname)s %(task)s%(message)s"
STATES = ("waiting", "delayed", "running", "dead")  # scalekit.tasks.engines.base.STATES

#: action name -> (help, add its arguments, run it)
ACTIONS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None], Callable]] = {}


def action(name: str, help: str, arguments: Callable[[argparse.ArgumentParser], None]):
    """Register the decorated ``run(args) -> exit code`` as ``scalekit tasks NAME``."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        ACTIONS[name] = (help, arguments, run)
        return run

    return register


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.allow_abbrev = False  # --secret must not pass for --secret-file
    parser.add_argument(
        "--store",
        metavar="URL",
        default=os.environ.get(STORE_VARIABLE),
        help=f"the task engine: redis://host:6379/0, sqlite://FILE, postgres://..., "
        f"mysql://... (default: ${STORE_VARIABLE})",
    )
    parser.add_argument(
        "--app",
        default=os.environ.get(APP_VARIABLE, "app"),
        help=f"the app whose tasks these are (default: ${APP_VARIABLE} or 'app')",
    )
    parser.add_argument(
        "--secret-file",
        metavar="FILE",
        help=f"a file whose first line is the secret signing the tasks (default: "
        f"${SECRET_VARIABLE}); needed to run, show and retry tasks",
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logs")
    actions = parser.add_subparsers(dest="action", metavar="<action>", required=True)
    for name, (text, arguments, run_action) in ACTIONS.items():
        sub = actions.add_parser(name, help=text, description=text)
        arguments(sub)
        sub.set_defaults(run_action=run_action)


def run(args: argparse.Namespace) -> int:
    if not args.store:
        raise ConfigError(f"no task engine: give --store URL or set ${STORE_VARIABLE}")
    return args.run_action(args)


def secret(args: argparse.Namespace) -> str:
    """The payloads' secret: the first line of ``--secret-file``, else $SCALEKIT_TASKS_SECRET."""
    if args.secret_file is not None:
        with open(args.secret_file, encoding="utf-8") as file:
            value = file.readline().strip()
    else:
        value = os.environ.get(SECRET_VARIABLE, "")
    if not value:
        raise ConfigError(
            f"tasks {args.action} needs the tasks' secret: set ${SECRET_VARIABLE} or give "
            "--secret-file FILE"
        )
    return value


def open_tasks(args: argparse.Namespace, **options: Any) -> Any:
    """The app's :class:`~scalekit.tasks.Tasks` on ``--store``, with its secret."""
    from scalekit.tasks import Tasks

    return Tasks(args.store, args.app, secret=secret(args), **options)


def open_engine(args: argparse.Namespace) -> Any:
    """The engine alone: what counting, listing and purging need (no secret); an existing
    one only (a mistyped SQLite path or app is exit 1, nothing created)."""
    from scalekit.tasks import open_engine

    return open_engine(args.store, app_name=args.app, create=False)


def _worker_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--queue",
        "-q",
        dest="queues",
        metavar="Q",
        action="append",
        help="a queue to run, repeatable; earlier ones first (default: default)",
    )
    parser.add_argument(
        "--concurrency",
        "-c",
        type=positive(int),
        default=1,
        metavar="N",
        help="worker processes, each running one task at a time (default 1)",
    )
    parser.add_argument(
        "--burst",
        action="store_true",
        help="exit once no task is ready (waiting, or delayed and due)",
    )
    parser.add_argument(
        "--max-tasks",
        type=positive(int),
        metavar="N",
        help="a process is replaced by a new one after N tasks",
    )
    parser.add_argument(
        "--max-memory",
        type=positive(float),
        metavar="MB",
        help="a process is replaced after the task that takes it over MB MiB of resident memory",
    )
    parser.add_argument(
        "--grace",
        type=duration,
        default=30.0,
        metavar="S",
        help="on SIGTERM, or past a task's timeout, the time a running task "
        "gets before its process is killed (default 30s)",
    )
    parser.add_argument(
        "--prefetch",
        type=positive(int),
        default=4,
        metavar="N",
        help="tasks a process claims at a time (default 4; 1 for long tasks)",
    )
    parser.add_argument(
        "--visibility-timeout",
        type=duration,
        metavar="S",
        help="the lease of a claimed task, renewed every third of it while it runs: a killed "
        "worker's tasks run again this long after (default 30s)",
    )
    parser.add_argument(
        "--tickets",
        metavar="URL",
        default=os.environ.get(TICKETS_VARIABLE),
        help=f"write an error ticket for every task that dies, to this ticket store "
        f"(file://FOLDER or a database URL; default: ${TICKETS_VARIABLE}, else none)",
    )
    parser.add_argument(
        "--import",
        dest="imports",
        metavar="MODULE",
        action="append",
        default=[],
        help="import this module of the app first (its periodic tasks register), repeatable",
    )


@action(
    "worker",
    "run the tasks of some queues until SIGTERM (or, --burst, until none is ready)",
    _worker_arguments,
)
def worker(args: argparse.Namespace) -> int:
    from scalekit.tasks.worker import TaskLogContext, Worker

    lease = args.visibility_timeout
    tasks = open_tasks(args, **({} if lease is None else {"visibility_timeout": lease}))
    for module in args.imports:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"--import {module}: {exc} (is its folder in PYTHONPATH?)") from exc
    for handler in logging.getLogger().handlers:
        handler.addFilter(TaskLogContext())
        handler.setFormatter(logging.Formatter(LOG_FORMAT))
    hook = ticket_writer(args.tickets, args.app) if args.tickets else None
    running = Worker(
        tasks, args.queues or ("default",), concurrency=args.concurrency, burst=args.burst,
        max_tasks=args.max_tasks, max_memory=args.max_memory, grace=args.grace,
        prefetch=args.prefetch, on_failure=hook, scheduler=scheduler(),
    )  # fmt: skip
    queues = ", ".join(running.queues)
    print(f"{NAME}: worker on {mask(args.store)}, queue(s) {queues}, "
          f"{args.concurrency} process(es)", flush=True)  # fmt: skip
    running.run()
    print(f"{NAME}: worker stopped", flush=True)
    return EXIT_OK


def scheduler() -> Any:
    """The scheduler of the periodic tasks the app's default Tasks (``Tasks(...,
    default=True)``, made by an ``--import``-ed module) registered; None if it has none."""
    from scalekit.tasks.facade import default_tasks
    from scalekit.tasks.periodic import Scheduler

    try:
        app_tasks = default_tasks()
    except ConfigError:  # no default Tasks, and no $SCALEKIT_TASKS to make one
        return None
    return Scheduler(app_tasks) if len(app_tasks.schedule) else None


def ticket_writer(url: str, app_name: str) -> Callable[[Any, tuple], None]:
    """The worker's failure hook: an error ticket in the store ``url`` for a dead task; its
    request is ``TASK /queue/function?task=ID``, its request id the deferring request's."""
    from scalekit.tickets import build, open_store

    store = open_store(url)

    def write(task: Any, exc_info: tuple) -> None:
        environ = {
            "REQUEST_METHOD": "TASK",
            "SCRIPT_NAME": f"/{task.queue}",
            "PATH_INFO": f"/{task.function}",
            "QUERY_STRING": f"task={task.id}&attempts={task.attempts}",
        }
        ticket = build(
            exc_info[1], environ, app_name=app_name, request_id=task.request_id or task.id
        )
        store.save(ticket)
        logging.getLogger("scalekit.tasks").info("task %s: ticket %s", task.id, ticket["id"])

    return write


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


@action("info", "how many tasks each queue has in each state", _no_arguments)
def info(args: argparse.Namespace) -> int:
    engine = open_engine(args)
    try:
        counts = engine.counts()
    finally:
        engine.close()
    lines = [f"{'queue':<24}" + "".join(f"{state:>10}" for state in STATES)]
    for queue in sorted(counts):
        lines.append(
            f"{queue[:23]:<24}" + "".join(f"{counts[queue].get(s, 0):>10}" for s in STATES)
        )
    total = sum(sum(by_state.values()) for by_state in counts.values())
    lines.append(f"{total} task(s) in {len(counts)} queue(s)")
    print("\n".join(map(visible, lines)))
    return EXIT_OK


def _list_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", "-q", default="default", help="(default: default)")
    parser.add_argument(
        "--state", "-s", choices=STATES, default="waiting", help="(default: waiting)"
    )
    parser.add_argument(
        "-n", "--limit", type=positive(int), default=50, help="how many (default 50)"
    )


@action(
    "list",
    "the tasks of a queue in a state, in the order they will run (dead ones: newest first)",
    _list_arguments,
)
def listing(args: argparse.Namespace) -> int:
    codec = _codec_if_any(args)
    engine = open_engine(args)
    try:
        found = engine.tasks(args.queue, args.state, args.limit)
    finally:
        engine.close()
    lines = [f"{'task':<28}{'eta (UTC)':<21}{'runs':>5}  callable"]
    for item in found:
        lines.append(
            f"{item.task_id:<28}{_when(item.eta):<21}{item.deliveries:>5}  "
            f"{_callable(codec, item.payload)}"
        )
    lines.append(f"{len(found)} {args.state} task(s) in queue {args.queue}")
    print("\n".join(map(visible, lines)))
    return EXIT_OK


def _show_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("task_id", metavar="ID")
    parser.add_argument("--queue", "-q", help="its queue (default: looked for in every queue)")


@action("show", "one task decoded: callable, arguments, attempts, eta, error", _show_arguments)
def show(args: argparse.Namespace) -> int:
    codec = _codec(args)
    engine = open_engine(args)
    try:
        found = engine.find(args.task_id, args.queue)
    finally:
        engine.close()
    if found is None:
        print(visible(f"{NAME}: no task {args.task_id!r} in {mask(args.store)}"))
        return EXIT_FAILURE
    lines = [
        f"task {found.task_id}  queue {found.queue}  {found.state}  name {found.name or '-'}",
        f"eta {_when(found.eta)}  handed out {found.deliveries} time(s)",
    ]
    try:
        task = codec.decode(found.payload)
    except CorruptData as exc:
        lines.append(f"its payload cannot be read: {exc}")
        task = None
    else:
        target = f"  bound to {task.target!r:.200}" if task.target is not None else ""
        lines += [
            f"callable {task.function}{target}",
            f"args {task.args!r:.2000}",
            f"kwargs {task.kwargs!r:.2000}",
            f"attempts {task.attempts} of {task.max_attempts}  timeout {task.timeout or '-'}",
            f"created {_when(task.created)}  request {task.request_id or '-'}",
        ]
    if found.error:
        lines += ["", *found.error.rstrip().split("\n")]
    print("\n".join(map(visible, lines)))
    return EXIT_OK if task is not None else EXIT_FAILURE


@action("retry", "run a dead task again, its attempts reset", _show_arguments)
def retry(args: argparse.Namespace) -> int:
    codec = _codec(args)
    engine = open_engine(args)
    try:
        found = engine.find(args.task_id, args.queue)
        if found is None or found.state != "dead":
            state = "no task" if found is None else f"task is {found.state}, not dead:"
            print(visible(f"{NAME}: {state} {args.task_id!r} not retried"))
            return EXIT_FAILURE
        try:
            task = codec.decode(found.payload)
        except CorruptData as exc:
            print(visible(f"{NAME}: task {args.task_id!r} cannot be read, not retried: {exc}"))
            return EXIT_FAILURE
        task.attempts = 0
        revived = engine.revive(found.queue, found.task_id, codec.reencode(task, found.payload))
    finally:
        engine.close()
    outcome = "waiting again" if revived else "was no longer dead: not retried"
    print(visible(f"{NAME}: task {found.task_id} of queue {found.queue} {outcome}"))
    return EXIT_OK if revived else EXIT_FAILURE


def _purge_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--queue", "-q", required=True)
    parser.add_argument(
        "--state",
        "-s",
        choices=STATES,
        help="only the tasks in this state (default: every state, running too)",
    )
    parser.add_argument("--dry-run", action="store_true", help="count them, delete nothing")


@action("purge", "delete the tasks of a queue (in one state)", _purge_arguments)
def purge(args: argparse.Namespace) -> int:
    engine = open_engine(args)
    which = f"{args.state} task(s)" if args.state else "task(s)"
    try:
        if args.dry_run:
            counts = engine.counts().get(args.queue, {})
            number = counts.get(args.state, 0) if args.state else sum(counts.values())
            line = f"{number} {which} of queue {args.queue} would be deleted"
        else:
            line = f"{engine.purge(args.queue, args.state)} {which} of queue {args.queue} deleted"
    finally:
        engine.close()
    print(visible(line))
    return EXIT_OK


def _relay_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db", metavar="URL", required=True, help="the app's database, where the outbox is"
    )
    parser.add_argument(
        "--min-age", type=non_negative(float), default=5.0, metavar="SECONDS",
        help="only rows at least this old: the relay after the commit comes first (default 5)",
    )  # fmt: skip
    parser.add_argument(
        "-n", "--limit", type=positive(int), default=1000, help="at most (default 1000)"
    )


@action(
    "relay",
    "enqueue the transactional tasks a crash left in the outbox; quiet unless it fails or "
    "-v is given (for cron), creates nothing",
    _relay_arguments,
)
def relay(args: argparse.Namespace) -> int:
    from scalekit.tasks.outbox import relay as relay_outbox

    engine = open_engine(args)
    try:
        count = relay_outbox(engine, args.db, app=args.app, limit=args.limit, min_age=args.min_age)
    finally:
        engine.close()
    if args.verbose:
        print(visible(f"{NAME}: {count} task(s) relayed from the outbox of {mask(args.db)}"))
    return EXIT_OK


def _serve_arguments(parser: argparse.ArgumentParser) -> None:
    serve_arguments(parser, 8002, TOKEN_VARIABLE)
    parser.add_argument(
        "--purge", action="store_true", help="a button deletes a queue's dead tasks"
    )


@action(
    "serve",
    f"watch the tasks in HTML, retry the dead ones (the TaskViewer); needs --allow or a token "
    f"(${TOKEN_VARIABLE} or --token-file, as Authorization: Bearer or ?token=)",
    _serve_arguments,
)
def serve(args: argparse.Namespace) -> int:
    from scalekit.tasks.viewer import TaskViewer

    token = viewer_token(args, TOKEN_VARIABLE, "the tasks' arguments and tracebacks")
    tasks = open_tasks(args, create=False)
    try:
        tasks.engine.counts()  # an engine that cannot be reached stops here
        viewer = TaskViewer(tasks, allowed=args.allow, token=token, purge=args.purge)
        return run_viewer(NAME, viewer, args, mask(args.store))
    finally:
        tasks.close()


def _codec(args: argparse.Namespace) -> Any:
    """The payloads' codec (it needs the secret)."""
    from scalekit.tasks.task import Codec

    return Codec(secret(args))


def _codec_if_any(args: argparse.Namespace) -> Any:
    """The codec if a secret is given, else None (listing shows no callables then)."""
    if args.secret_file is None and not os.environ.get(SECRET_VARIABLE):
        return None
    return _codec(args)


def _callable(codec: Any, payload: bytes) -> str:
    if codec is None:
        return "?"
    try:
        return codec.decode(payload).function
    except CorruptData:
        return "(unreadable payload)"


def _when(moment: float | None) -> str:
    if moment is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(moment))
