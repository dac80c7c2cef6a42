"""``Tasks`` and ``defer``: configuration, the checks made before anything is enqueued."""

from __future__ import annotations

import datetime

import pytest

from scalekit.core import context
from scalekit.core.errors import ConfigError, InvalidArgument
from scalekit.tasks import Tasks, default_tasks, defer, facade
from scalekit.tasks.errors import NotDeferrable, PayloadTooLarge, TaskAlreadyExists
from scalekit.testing import fresh_app_name

SECRET = "k" * 32
#: Nothing listens there: a test that reached the engine would fail.
NOWHERE = "redis://127.0.0.1:1/0"


def add(a, b=0):
    return a + b


class Account:
    def __init__(self, balance):
        self.balance = balance

    def credit(self, amount):
        return self.balance + amount


@pytest.fixture(autouse=True)
def no_default(monkeypatch):
    """No default Tasks and no environment: each test starts as a new process."""
    monkeypatch.setattr(facade, "_default", [])
    for name in ("SCALEKIT_TASKS", "SCALEKIT_TASKS_SECRET", "SCALEKIT_APP"):
        monkeypatch.delenv(name, raising=False)


def test_a_secret_is_required_and_must_be_long(monkeypatch):
    with pytest.raises(ConfigError, match=r"secret=\.\.\. or \$SCALEKIT_TASKS_SECRET"):
        Tasks(NOWHERE)
    with pytest.raises(ConfigError, match=r"secret= \(or \$SCALEKIT_TASKS_SECRET\).*at least 32"):
        Tasks(NOWHERE, secret="short")
    monkeypatch.setenv("SCALEKIT_TASKS_SECRET", SECRET)
    tasks = Tasks(NOWHERE)
    assert tasks.decode(Tasks(NOWHERE, secret=SECRET).encode(_task(tasks))).function


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"serializer": "yaml"}, "use 'json' or 'pickle'"),
        ({"max_payload": 10}, "max_payload"),
        ({"visibility_timeout": 0}, "visibility_timeout 0 must be"),
        ({"name_ttl": -1}, "name_ttl -1 must be"),
        ({"max_attempts": 0}, "max_attempts 0 must be an int, 1 or more"),
        ({"min_backoff": 10, "max_backoff": 5}, "min_backoff is more than max_backoff"),
        ({"max_age": "1h"}, "max_age '1h' must be a number of seconds"),
        ({"queues": {"bad queue": {}}}, "queue name 'bad queue'"),
        ({"queues": {"mail": {"retries": 3}}}, "queue 'mail': unknown option"),
        ({"queues": {"mail": {"max_backoff": 0.5}}}, "'mail': min_backoff is more than"),
        ({"queues": {"mail": 3}}, "must map option names"),
        ({"app_name": "my app"}, "app name 'my app'"),
    ],
)
def test_bad_settings_are_config_errors_naming_them(options, problem):
    with pytest.raises(ConfigError, match=problem):
        Tasks(NOWHERE, secret=SECRET, **options)


def test_an_unknown_engine_url_is_refused_at_once():
    with pytest.raises(ConfigError, match="memcache URL"):
        Tasks("memcache://127.0.0.1:11211", secret=SECRET)


def _task(tasks, fn=add, *args, **options):
    return tasks.task_for(fn, args or (1,), {"b": 2}, **options)


def test_the_stored_task_decodes_back_to_the_same_call():
    tasks = Tasks(NOWHERE, secret=SECRET, max_attempts=3, min_backoff=2, max_backoff=20)
    task = _task(tasks, add, 40)
    back = tasks.decode(tasks.encode(task))
    assert back == task
    assert back.resolve()(*back.args, **back.kwargs) == 42
    assert (back.queue, back.max_attempts, back.min_backoff, back.max_backoff, back.eta) == (
        "default", 3, 2.0, 20.0, None,
    )  # fmt: skip
    account = Account(10)
    back = tasks.decode(tasks.encode(_task(tasks, account.credit, 5)))
    assert back.resolve()(*back.args) == 15 and back.target.balance == 10


def test_a_task_carries_the_id_of_the_request_that_deferred_it():
    tasks = Tasks(NOWHERE, secret=SECRET)
    assert _task(tasks).request_id is None
    token = context.request_id.set("req-7f3a")
    try:
        assert tasks.decode(tasks.encode(_task(tasks))).request_id == "req-7f3a"
    finally:
        context.request_id.reset(token)


def test_queue_overrides_then_per_call_options_apply():
    tasks = Tasks(NOWHERE, secret=SECRET, timeout=5, queues={"mail": {"max_attempts": 9}})
    assert _task(tasks, queue="mail").max_attempts == 9
    assert _task(tasks, queue="other").max_attempts == 5
    task = _task(tasks, queue="mail", retries=0, timeout=1.5)
    assert (task.max_attempts, task.timeout) == (1, 1.5)
    assert _task(tasks).timeout == 5.0


def test_countdown_and_eta_set_when_it_runs():
    tasks = Tasks(NOWHERE, secret=SECRET)
    task = _task(tasks, countdown=60)
    assert task.eta == pytest.approx(task.created + 60)
    naive = datetime.datetime(2030, 1, 1, 12, 0)
    aware = naive.replace(tzinfo=datetime.timezone.utc)
    assert _task(tasks, eta=naive).eta == _task(tasks, eta=aware).eta == aware.timestamp()
    assert _task(tasks, eta=1_900_000_000).eta == 1_900_000_000.0


@pytest.mark.parametrize(
    ("options", "problem"),
    [
        ({"countdown": 5, "eta": 10.0}, "_countdown or _eta, not both"),
        ({"countdown": -1}, "_countdown -1 must be"),
        ({"eta": "tomorrow"}, "_eta"),
        ({"name": "a\nb"}, "task name 'a\\\\nb' must be 1-200 printable"),
        ({"name": "x" * 201}, "must be 1-200 printable"),
        ({"name": ""}, "must be 1-200 printable"),
        ({"queue": "a{b}"}, "queue name 'a{b}'"),
        ({"retries": -1}, "_retries -1 must be an int"),
        ({"timeout": 0}, "_timeout 0 must be"),
    ],
)
def test_bad_defer_options_are_refused(options, problem):
    with pytest.raises(InvalidArgument, match=problem):
        _task(Tasks(NOWHERE, secret=SECRET), **options)


def test_unknown_underscore_options_are_refused_not_passed_to_the_task():
    tasks = Tasks(NOWHERE, secret=SECRET)
    with pytest.raises(InvalidArgument, match=r"unknown option.*_countdwn"):
        tasks.defer(add, 1, _countdwn=5)


def test_defer_refuses_before_opening_the_engine():
    tasks = Tasks(NOWHERE, secret=SECRET, max_payload=1000)
    with pytest.raises(NotDeferrable, match="is a lambda"):
        tasks.defer(lambda: 1)
    with pytest.raises(NotDeferrable, match=r"args\[0\] holds a object"):
        tasks.defer(add, object())
    with pytest.raises(PayloadTooLarge, match=r"payload is \d+ bytes, over max_payload=1000"):
        tasks.defer(add, "x" * 1000)


def test_the_task_decorator_keeps_the_function_and_adds_defer():
    tasks = Tasks(NOWHERE, secret=SECRET)

    def job(x):
        return x

    assert tasks.task(queue="mail")(job) is job and job(3) == 3
    assert job.defer.__name__ == "job"
    with pytest.raises(NotDeferrable, match="nested function"):
        job.defer(1)  # checked like any defer: a worker could not import it
    with pytest.raises(InvalidArgument, match="queue name"):
        tasks.task(queue="")


def test_module_level_defer_without_a_default_says_how_to_configure():
    with pytest.raises(ConfigError, match=r"default=True.*\$SCALEKIT_TASKS.*SECRET"):
        defer(add, 1)


def test_the_default_is_the_last_made_with_default_true_else_the_environment(monkeypatch):
    monkeypatch.setenv("SCALEKIT_TASKS", NOWHERE)
    monkeypatch.setenv("SCALEKIT_TASKS_SECRET", SECRET)
    monkeypatch.setenv("SCALEKIT_APP", "shop")
    from_environment = default_tasks()
    assert repr(from_environment) == f"Tasks({NOWHERE!r}, app_name='shop')"
    assert default_tasks() is from_environment
    chosen = Tasks(NOWHERE, secret=SECRET, default=True)
    assert default_tasks() is chosen
    with pytest.raises(NotDeferrable, match="is a lambda"):
        defer(lambda: 1)


# On every engine (tests/tasks/conftest.py), on its real server: what defer stores, and
# what it refuses to store.


@pytest.fixture
def tasks(engine_url):
    opened = Tasks(engine_url, fresh_app_name(), secret=SECRET, max_payload=4096,
                   visibility_timeout=5)  # fmt: skip
    yield opened
    opened.close()


def stored(tasks) -> int:
    return sum(sum(states.values()) for states in tasks.engine.counts().values())


def decorated(a, b=0):
    return a - b


def test_defer_stores_a_payload_that_decodes_back_to_the_same_call(tasks):
    task_id = tasks.defer(add, 40, b=2, _retries=1)
    info = tasks.engine.find(task_id, "default")
    assert (info.task_id, info.state, info.name) == (task_id, "waiting", None)
    task = tasks.decode(info.payload)
    assert (task.id, task.function, task.max_attempts) == (task_id, f"{__name__}:add", 2)
    assert task.resolve()(*task.args, **task.kwargs) == 42


def test_a_countdown_makes_a_delayed_task(tasks):
    task_id = tasks.defer(add, 1, _countdown=600, _queue="later")
    info = tasks.engine.find(task_id)
    assert info.state == "delayed" and info.eta == pytest.approx(tasks.decode(info.payload).eta)


def test_refused_calls_enqueue_nothing(tasks):
    with pytest.raises(NotDeferrable, match="is a lambda"):
        tasks.defer(lambda: 1)
    with pytest.raises(PayloadTooLarge, match=r"the payload is \d{4} bytes, over max_payload=4096"):
        tasks.defer(add, "x" * 4096)
    assert stored(tasks) == 0


def test_a_named_task_is_enqueued_once(tasks):
    first = tasks.defer(add, 1, _name="receipt-42")
    with pytest.raises(TaskAlreadyExists):
        tasks.defer(add, 2, _name="receipt-42")
    tasks.defer(add, 3, _name="receipt-42", _queue="other")  # names are per queue
    assert [info.task_id for info in tasks.engine.tasks("default", "waiting")] == [first]
    assert tasks.engine.find(first).name == "receipt-42"


def test_the_decorator_and_the_module_level_defer_enqueue(tasks, engine_url):
    assert tasks.task(queue="mail", retries=2)(decorated) is decorated
    task_id = decorated.defer(5, b=1)
    task = tasks.decode(tasks.engine.find(task_id, "mail").payload)
    assert (task.queue, task.max_attempts, task.resolve()(*task.args, **task.kwargs)) == (
        "mail", 3, 4,
    )  # fmt: skip
    default = Tasks(engine_url, tasks.app_name, secret=SECRET, default=True)
    task_id = defer(add, 1, _queue="q2")
    assert tasks.decode(default.engine.find(task_id, "q2").payload).args == (1,)
    default.close()


def test_the_urls_visibility_timeout_and_name_ttl_hold_unless_given(tmp_path):
    """Tasks passes its engine the lease and name times only when given: the URL's query
    (e.g. in ``scalekit tasks worker``'s $SCALEKIT_TASKS) is not overridden by defaults."""
    url = f"sqlite://{tmp_path}/t.sqlite?visibility_timeout=2&name_ttl=60"
    from_url = Tasks(url, secret=SECRET)
    assert (from_url.engine.visibility_timeout, from_url.engine.name_ttl) == (2, 60)
    given = Tasks(url, secret=SECRET, visibility_timeout=5)
    assert (given.engine.visibility_timeout, given.engine.name_ttl) == (5, 60)
    plain = Tasks(f"sqlite://{tmp_path}/u.sqlite", secret=SECRET)
    assert (plain.engine.visibility_timeout, plain.engine.name_ttl) == (30, 7 * 86400)
