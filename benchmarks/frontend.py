"""Request front end: what FrontendMiddleware adds to a request, and its gzip beside Django's
GZipMiddleware and flask-compress.

What the front end issue claims, measured in one run:

1. With compression off, a request through ``FrontendMiddleware`` costs at most 15 µs more
   than the same request to the bare app (a small HTML page): with the defaults (the access
   log on but its logger not enabled, a 60 s deadline) and with trusted proxies and an
   ``X-Forwarded-For`` chain. For scale, the same with the access log written to a file,
   and the defaults without the deadline, the access log, or both (what each part costs).
2. gzip, level 6 everywhere and ``Accept-Encoding: gzip``, of the same dynamic HTML and JSON
   bodies (2 kB, 20 kB, 200 kB, generated from a fixed seed): scalekit's compression costs
   no more per response than Django's ``GZipMiddleware`` and flask-compress, and its
   compressed stream is no longer. The random bytes that scalekit and Django add against
   BREACH (a gzip file name of random length) are shown beside it: they are the price of the
   mitigation, which flask-compress does not pay. The cost of each is the app with
   compression minus the same app without, in the same round: FrontendMiddleware compress
   on - off; GZipMiddleware wrapped around a view the way Django's handler chains middleware
   - the view alone (the middleware's whole ``__call__``: process_response and its padding);
   a Flask app with ``Compress(app)`` - the same app without. The floor: ``gzip.compress``.
3. brotli beside gzip for the same bodies (informational).

Every request is called in-process as a server makes it: a fresh copy of an environ that
gunicorn's own parser built from a raw browser request, a ``start_response``, the body
iterated and closed. This process is pinned to one CPU (``sched_setaffinity``); the cases
take turns within each round, every figure is a median over the rounds, and every overhead
or ratio is the median of the per-round differences or ratios.
Run: ``.venv/bin/python benchmarks/frontend.py [--quick] [--profile]``
"""

from __future__ import annotations

import argparse
import cProfile
import gzip
import json
import logging
import os
import pstats
import random
import signal
import socket
import statistics
import sys
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version

import brotli
import deflate
import django
import flask
import harness
from django.conf import settings
from flask_compress import Compress
from gunicorn.config import Config
from gunicorn.http import wsgi as gunicorn_wsgi
from gunicorn.http.message import Request
from gunicorn.http.unreader import IterUnreader
from harness import differences, interleaved, median, per_round, spread, verdict

from scalekit.frontend import FrontendMiddleware
from scalekit.frontend.compression import Compression

TARGET_US = 15.0
LEVEL = 6  # gzip level on all three sides
PADDED = 101  # responses sized per contender: the random padding varies them
PROXIES = ["10.0.0.0/8"]  # the load balancers' network, trusted in the proxies case


@dataclass(frozen=True)
class Plan:
    rounds: int  # 1.: every figure is a median over this many rounds
    requests: int  # 1.: requests per case in one round
    compress_rounds: int  # 2. and 3.
    compress_bytes: int  # 2. and 3.: body bytes each case compresses in one round


FULL = Plan(rounds=41, requests=5_000, compress_rounds=21, compress_bytes=2_000_000)
QUICK = Plan(rounds=9, requests=1_000, compress_rounds=5, compress_bytes=500_000)


# -- timing --------------------------------------------------------------------------------
def pin() -> int:
    """This process on one CPU, as the other benchmarks: no migrations between cases."""
    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    return cpu


# -- requests as gunicorn makes them -------------------------------------------------------
BROWSER = [
    ("Host", "shop.example"),
    ("User-Agent", ("Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
                    "Chrome/131.0.0.0 Safari/537.36")),
    ("Accept", ("text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,"
                "image/webp,*/*;q=0.8")),
    ("Accept-Language", "en-US,en;q=0.9,it;q=0.8"),
    ("Accept-Encoding", "gzip, deflate, br, zstd"),
    ("Connection", "keep-alive"),
    ("Referer", "https://shop.example/shop/"),
    ("Cookie", ("session_id_shop=38211.Zq3xW0b6JfL1mZc8RtUe4HnVs6PdGo5yBxAiKjq0Yb7a2XQ3w9; "
                "csrftoken=kq0Yb7a2XQ3w9JfL1mZc8RtUe4HnVs6P")),
    ("Upgrade-Insecure-Requests", "1"),
    ("Sec-Fetch-Dest", "document"),
    ("Sec-Fetch-Mode", "navigate"),
    ("Sec-Fetch-Site", "same-origin"),
]  # fmt: skip
FORWARDED = [("X-Forwarded-For", "198.51.100.23, 10.0.0.3"), ("X-Forwarded-Proto", "https")]


def gunicorn_environ(headers: list[tuple[str, str]], peer: str = "10.0.0.2") -> dict:
    """The environ gunicorn's sync worker hands the app for this GET from ``peer``."""
    raw = "GET /shop/items?page=2 HTTP/1.1\r\n"
    raw += "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    cfg = Config()
    sock, _ = socket.socketpair()  # only stored in the environ (gunicorn.socket)
    request = Request(cfg, IterUnreader([raw.encode("latin-1")]), (peer, 51234), 1)
    _, environ = gunicorn_wsgi.create(request, sock, (peer, 51234), ("10.0.0.9", 8000), cfg)
    return environ


def with_encoding(environ: dict, accept: str) -> dict:
    return {**environ, "HTTP_ACCEPT_ENCODING": accept}


def serve(app: Callable, base: dict) -> tuple[str, dict[str, str], bytes]:
    """One request as a server makes it; status, headers (lower-cased names) and body."""
    status, headers, body = harness.serve(app, base)
    return status, {name.lower(): value for name, value in headers}, body


def body_app(body: bytes, content_type: str) -> Callable:
    """A view that answers ``body``, as a dynamic page would (Content-Length set)."""
    headers = [("Content-Type", content_type), ("Content-Length", str(len(body)))]

    def app(environ, start_response):
        start_response("200 OK", list(headers))
        return [body]

    return app


PAGE = (
    b"<!doctype html><html lang=en><head><meta charset=utf-8><title>Shop</title>"
    b'<link rel=stylesheet href="/static/site.css"></head><body><header><nav>'
    b'<a href="/">Home</a> <a href="/shop/">Shop</a> <a href="/cart/">Cart (2)</a></nav>'
    b"</header><main><h1>Items, page 2</h1><p>48 items.</p></main></body></html>"
)


# -- 1. overhead per request, compression off ----------------------------------------------
#: name: (label, FrontendMiddleware options over compress=False, with a target). "logged"
#: is "defaults" with the access logger enabled, writing to a file.
VARIANTS = {
    "defaults": ("defaults (access log on, its logger not enabled)", {}, True),
    "proxies": (f"trusted_proxies={PROXIES}, X-Forwarded-For chain",
                {"trusted_proxies": PROXIES}, True),
    "logged": ("access log written to a file (@ bytes a record)", {}, False),
    "no_deadline": ("  parts: defaults with deadline=None", {"deadline": None}, False),
    "no_log": ("  parts: defaults with access_log=None", {"access_log": None}, False),
    "neither": ("  parts: deadline=None, access_log=None", {"deadline": None, "access_log": None},
                False),
    "compress": ("  parts: compress=True (the page under min_size)", {"compress": True}, False),
}  # fmt: skip


def request_overhead(plan: Plan, folder: str) -> dict[str, Callable]:
    """Section 1; the cases, for --profile."""
    app = body_app(PAGE, "text/html; charset=utf-8")
    plain, forwarded = gunicorn_environ(BROWSER), gunicorn_environ(BROWSER + FORWARDED)
    check_proxies(forwarded)
    cases = {"bare": lambda: serve(app, plain)}
    for name, (_, options, _) in VARIANTS.items():
        frontend = FrontendMiddleware(app, **{"compress": False, **options})
        environ = forwarded if name == "proxies" else plain
        cases[name] = lambda frontend=frontend, environ=environ: serve(frontend, environ)
    access = logging.getLogger("scalekit.access")
    path = os.path.join(folder, "access.log")
    access.addHandler(logging.FileHandler(path))
    access.propagate = False

    def setup(name: str) -> None:  # the access logger enabled for "logged" only
        access.setLevel(logging.INFO if name == "logged" else logging.NOTSET)

    setup("defaults")
    if access.isEnabledFor(logging.INFO):  # the access record is an INFO record
        raise RuntimeError("the scalekit.access logger is enabled by the configuration")
    for name, case in cases.items():
        setup(name)
        status, headers, body = case()
        if status != "200 OK" or body != PAGE or ("x-request-id" in headers) == (name == "bare"):
            raise RuntimeError(f"{name}: {status} {headers} {body[:80]!r}")
    with open(path, encoding="utf-8") as file:
        record = file.read().splitlines()[-1]  # the one "logged" wrote above
    scale = logging.getLogger("bench.scale")  # for scale: logging's own cost of a record
    scale.addHandler(logging.FileHandler(os.path.join(folder, "scale.log")))
    scale.propagate, scale.level = False, logging.INFO
    cases["scale"] = lambda: scale.info("%s", record)
    interleaved(cases, max(plan.requests // 10, 100), rounds=1, setup=setup)  # warm up
    logged_before = os.path.getsize(path)
    t = interleaved(cases, plan.requests, plan.rounds, setup=setup)
    per_record = (os.path.getsize(path) - logged_before) / (plan.requests * plan.rounds)
    setup("")
    print(
        f"\n1. Overhead per request, compression off, µs (median of {plan.rounds} rounds x "
        f"{plan.requests:,} requests; spread: the middle half of the per-round overheads)"
    )
    print(f"   {'case':<56}{'µs/req':>7}{'overhead':>10}{'spread':>12}{'ratio':>8}")
    print(f"   {f'baseline: the bare app ({len(PAGE)}-byte HTML page)':<56}"
          f"{median(t['bare']):7.2f}")  # fmt: skip
    for name, (label, _, target) in VARIANTS.items():
        cost = differences(t[name], t["bare"])
        ratio = per_round(lambda x, y: x / y, t[name], t["bare"])
        check = f"target <= {TARGET_US:g} µs {verdict(median(cost) <= TARGET_US)}" if target else ""
        print(f"   {label.replace('@', f'{per_record:.0f}'):<56}{median(t[name]):7.2f}"
              f"{median(cost):+10.2f}{spread(cost):>12}{ratio:7.1f}x   {check}")  # fmt: skip
    print(f"   {'for scale: logging.info of that record to a FileHandler':<56}"
          f"{median(t['scale']):7.2f}")  # fmt: skip
    return cases


def profile(cases: dict[str, Callable], requests: int) -> None:
    """--profile: where the defaults case spends its time (cProfile inflates small calls)."""
    profiler = cProfile.Profile()
    profiler.runcall(lambda: [cases["defaults"]() for _ in range(requests)])
    print(f"\n   cProfile of {requests:,} requests, defaults case, by own time:")
    stats = pstats.Stats(profiler, stream=sys.stdout)
    stats.strip_dirs().sort_stats("tottime").print_stats(18)


def check_proxies(forwarded: dict) -> None:
    """The proxies case takes the trusted path: the app sees the client and the scheme."""
    seen: dict = {}

    def probe(environ, start_response):
        seen.update(addr=environ["REMOTE_ADDR"], scheme=environ["wsgi.url_scheme"])
        return body_app(PAGE, "text/html")(environ, start_response)

    serve(FrontendMiddleware(probe, compress=False, trusted_proxies=PROXIES), forwarded)
    if seen != {"addr": "198.51.100.23", "scheme": "https"}:
        raise RuntimeError(f"trusted proxies not applied: the app saw {seen}")


# -- 2. and 3. compression of dynamic bodies -----------------------------------------------
WORDS = [
    "alpine", "basket", "canvas", "copper", "denim", "ember", "fjord", "garnet", "harbor",
    "indigo", "juniper", "kettle", "lantern", "meadow", "nickel", "orchard", "pepper",
    "quartz", "river", "saddle", "timber", "umber", "velvet", "walnut", "yarrow", "zephyr",
    "linen", "cotton", "wool", "leather", "ceramic", "glass", "oak", "maple", "slate",
    "marble",
]  # fmt: skip


def html_body(size: int, rng: random.Random) -> bytes:
    """A product listing page of about ``size`` bytes: the markup of a real dynamic page."""
    head = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Shop</title>'
        '<link rel="stylesheet" href="/static/site.css"></head><body><main><table class="items">'
        "<thead><tr><th>SKU</th><th>Item</th><th>Price</th><th>Stock</th></tr></thead><tbody>\n"
    )
    rows, tail, total = [], "</tbody></table></main></body></html>\n", len(head) + 38
    while total < size:
        item = rng.randrange(100_000)
        name = " ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 4))).title()
        row = (
            f'<tr class="item" data-id="{item}"><td class="sku">SK-{item:05d}</td>'
            f'<td><a href="/shop/item/{item}">{name}</a></td>'
            f'<td class="price">{rng.randint(1, 999)}.{rng.randint(0, 99):02d} €</td>'
            f"<td>{rng.randint(0, 40)}</td></tr>\n"
        )
        rows.append(row)
        total += len(row.encode())
    return (head + "".join(rows) + tail).encode()


def json_body(size: int, rng: random.Random) -> bytes:
    """An API answer of about ``size`` bytes: a list of records."""
    records, total = [], 2
    while total < size:
        record = {
            "id": rng.randrange(1_000_000),
            "name": " ".join(rng.choice(WORDS) for _ in range(3)),
            "price": round(rng.uniform(1, 999), 2),
            "tags": rng.sample(WORDS, 3),
            "in_stock": rng.random() < 0.8,
            "updated": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
        }
        records.append(record)
        total += len(json.dumps(record)) + 2
    return json.dumps({"items": records}).encode()


def bodies() -> dict[str, tuple[bytes, str]]:
    """label: (body, Content-Type), 2 kB, 20 kB and 200 kB of HTML and of JSON."""
    made = {}
    for size in (2_000, 20_000, 200_000):
        rng = random.Random(size)
        made[f"html {size // 1000} kB"] = (html_body(size, rng), "text/html; charset=utf-8")
        made[f"json {size // 1000} kB"] = (json_body(size, rng), "application/json")
    return made


def django_pair(body: bytes, content_type: str, environ: dict) -> tuple[Callable, Callable]:
    """A Django view and GZipMiddleware around it, called on one request as Django's handler
    calls its middleware chain; each returns status, headers and the body, iterated and
    closed."""
    from django.core.handlers.wsgi import WSGIRequest
    from django.http import HttpResponse
    from django.middleware.gzip import GZipMiddleware

    request = WSGIRequest(dict(environ))

    def view(request):
        return HttpResponse(body, content_type=content_type)

    def respond(handler: Callable) -> Callable:
        def call():
            response = handler(request)
            content = b"".join(response)
            response.close()
            return response.status_code, response.headers, content

        return call

    return respond(view), respond(GZipMiddleware(view))


def flask_app(body: bytes, content_type: str, algorithm: str | None, quality: int) -> Callable:
    """A Flask app answering ``body``, with flask-compress on ``algorithm`` (None: without)."""
    app = flask.Flask(__name__)
    app.config.update(
        COMPRESS_ALGORITHM=algorithm or "gzip", COMPRESS_LEVEL=LEVEL, COMPRESS_BR_LEVEL=quality
    )
    if algorithm:
        Compress(app)
    app.add_url_rule(
        "/shop/items", "items", lambda: flask.Response(body, content_type=content_type)
    )
    return app


def sent(label: str, encoding: str, headers, data: bytes, body: bytes) -> bytes:
    """A compressed response's bytes, after checking that they decode to ``body``."""
    decode = gzip.decompress if encoding == "gzip" else brotli.decompress
    if headers.get("content-encoding") != encoding or decode(data) != body:
        raise RuntimeError(f"{label}: not a {encoding} response of the body: {headers}")
    return data


def responses(call: Callable, label: str, encoding: str, body: bytes) -> list[bytes]:
    """``PADDED`` responses of ``call``, each checked: random padding varies their sizes."""
    return [sent(label, encoding, *call()[1:], body) for _ in range(PADDED)]


def unpadded(data: bytes) -> int:
    """Bytes of a gzip response without the random file name that scalekit and Django add
    as BREACH padding (RFC 1952: FNAME, flag 0x08, a zero-terminated field after the
    10-byte header)."""
    if not data[3] & 0x08:
        return len(data)
    return len(data) - (data.index(b"\0", 10) + 1 - 10)


@dataclass
class Measured:
    """One contender on one body: µs per response in every round, and its outputs."""

    label: str
    cost: list[float]
    outputs: list[bytes]

    @property
    def sent(self) -> float:
        """Bytes sent, the mean response (random padding varies them)."""
        return statistics.fmean(len(data) for data in self.outputs)

    @property
    def stream(self) -> int:
        """Bytes of the compressed stream itself, without padding (gzip: the same in every
        response)."""
        return int(median(unpadded(data) for data in self.outputs))

    @property
    def note(self) -> str:
        low, high = min(map(len, self.outputs)), max(map(len, self.outputs))
        return "" if low == high else f"{low:,}..{high:,}: random padding"


#: name: (label, the case, the same without compression (None: a floor), coding)
CONTENDERS = {
    "zlib": ("floor: gzip.compress (zlib)", "zlib", None, "gzip"),
    "libdeflate": ("floor: libdeflate", "libdeflate", None, "gzip"),
    "gzip": ("scalekit FrontendMiddleware", "gzip", "off", "gzip"),
    "django": ("Django GZipMiddleware", "django_gzip", "django_view", "gzip"),
    "flask": ("flask-compress", "flask_gzip", "flask", "gzip"),
    "brotli": ("floor: brotli.compress", "brotli", None, "br"),
    "br": ("scalekit FrontendMiddleware", "br", "off", "br"),
    "flask_br": ("flask-compress", "flask_br", "flask", "br"),
}


def compression(plan: Plan, environ: dict, quality: int) -> list[tuple[str, int, dict]]:
    """For each body: its size and each contender's costs and responses (gzip, brotli)."""
    gzipped, brotlied = with_encoding(environ, "gzip"), with_encoding(environ, "br")
    results = []
    for label, (body, content_type) in bodies().items():
        app = body_app(body, content_type)
        off = FrontendMiddleware(app, compress=False)
        on = FrontendMiddleware(app, gzip_level=LEVEL)
        django_view, django_gzip = django_pair(body, content_type, gzipped)
        flask_plain = flask_app(body, content_type, None, quality)
        flask_gzip = flask_app(body, content_type, "gzip", quality)
        flask_br = flask_app(body, content_type, "br", quality)
        cases = {
            "zlib": lambda body=body: gzip.compress(body, LEVEL, mtime=0),
            "libdeflate": lambda body=body: deflate.gzip_compress(body, LEVEL),
            "brotli": lambda body=body: brotli.compress(body, quality=quality),
            "off": lambda off=off: serve(off, gzipped),
            "gzip": lambda on=on: serve(on, gzipped),
            "br": lambda on=on: serve(on, brotlied),
            "django_view": django_view,
            "django_gzip": django_gzip,
            "flask": lambda app=flask_plain: serve(app, gzipped),
            "flask_gzip": lambda app=flask_gzip: serve(app, gzipped),
            "flask_br": lambda app=flask_br: serve(app, brotlied),
        }

        number = max(3, plan.compress_bytes // len(body))
        interleaved(cases, max(number // 10, 1), rounds=1)  # warm up
        t = interleaved(cases, number, plan.compress_rounds)
        found = {}
        for name, (title, case, without, encoding) in CONTENDERS.items():
            if without is None:  # a floor: the bare compressor's output
                found[name] = Measured(title, t[case], [cases[case]()])
            else:
                outputs = responses(cases[case], title, encoding, body)
                found[name] = Measured(title, differences(t[case], t[without]), outputs)
        results.append((label, len(body), found))
    return results


def report_gzip(plan: Plan, results: list[tuple[str, int, dict]], padding: int) -> None:
    """Section 2; ``padding``: scalekit's max_random_bytes (Django's is GZipMiddleware's)."""
    from django.middleware.gzip import GZipMiddleware

    django_padding = GZipMiddleware.max_random_bytes
    print(
        f"\n2. gzip level {LEVEL} of dynamic bodies (Accept-Encoding: gzip): µs per response "
        f"that compressing adds (with - without, median of {plan.compress_rounds} rounds);\n"
        "   bytes: the compressed stream, and the mean sent over "
        f"{PADDED} responses with the random padding against BREACH (a gzip file name of\n"
        f"   random length: scalekit max_random_bytes={padding}, Django's {django_padding}, "
        "flask-compress none). Target: scalekit at least as fast as each, and no more\n"
        "   bytes: vs Django like for like (stream no longer, padding no larger), vs "
        "flask-compress the stream no longer, the padding's mean shown apart"
    )
    print(f"   {'body':<25}{'':<30}{'µs':>8}{'stream':>8}{'sent':>8}{'scalekit time':>15}")
    for label, size, found in results:
        scalekit = found["gzip"]
        for number, name in enumerate(("zlib", "libdeflate", "gzip", "django", "flask")):
            m = found[name]
            head = f"{label} ({size:,} B)" if number == 0 else ""
            line = f"   {head:<25}{m.label:<30}{median(m.cost):8.1f}{m.stream:8,}{m.sent:8,.0f}"
            if name in ("django", "flask"):
                ratio = per_round(lambda s, o: s / o, scalekit.cost, m.cost)
                small = scalekit.stream <= m.stream
                if name == "django":
                    small = small and padding <= django_padding
                line += f"{ratio:14.2f}x   time {verdict(ratio <= 1.0)}, bytes {verdict(small)}"
                if name == "flask":
                    line += f" (+{scalekit.sent - scalekit.stream:.0f} padding)"
            print(line)


def report_brotli(plan: Plan, results: list[tuple[str, int, dict]], quality: int) -> None:
    print(
        f"\n3. brotli quality {quality} (scalekit's default; flask-compress set to it, its own "
        f"is 4) beside scalekit's gzip {LEVEL}, same bodies and rounds (Accept-Encoding: br), "
        "informational"
    )
    print(f"   {'body':<25}{'':<30}{'µs':>8}{'bytes':>8}{'/ gzip time':>13}{'/ gzip bytes':>14}")
    for label, size, found in results:
        gzipped = found["gzip"]
        for number, name in enumerate(("brotli", "br", "flask_br")):
            m = found[name]
            head = f"{label} ({size:,} B)" if number == 0 else ""
            line = f"   {head:<25}{m.label:<30}{median(m.cost):8.1f}{m.sent:8,.0f}"
            if name == "br":
                ratio = per_round(lambda b, g: b / g, m.cost, gzipped.cost)
                line += f"{ratio:12.2f}x{m.sent / gzipped.sent:13.2f}x"
            print(line + (f"   ({m.note})" if m.note else ""))


# -- main ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer iterations")
    parser.add_argument("--profile", action="store_true", help="cProfile the defaults case")
    args = parser.parse_args()
    plan = QUICK if args.quick else FULL
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    cpu = pin()
    settings.configure(DEBUG=False, ALLOWED_HOSTS=["*"], SECRET_KEY="benchmark, not secret")
    django.setup()
    quality = Compression().brotli_quality  # scalekit's default, given to flask-compress too
    print(
        f"request front end ({'quick' if plan is QUICK else 'full'} run): Python "
        f"{sys.version.split()[0]}, gunicorn {version('gunicorn')} environ, Django "
        f"{django.__version__}, Flask {version('flask')}, flask-compress "
        f"{version('flask-compress')}, zlib {zlib.ZLIB_RUNTIME_VERSION}, deflate (libdeflate) "
        f"{version('deflate')}, brotli "
        f"{brotli.version}; this process on CPU {cpu} of {os.cpu_count()}\n"
        "figures: medians over rounds in which the cases take turns; overheads and ratios: "
        "medians of the per-round differences and ratios"
    )
    with tempfile.TemporaryDirectory(prefix="scalekit-bench-") as folder:
        cases = request_overhead(plan, folder)
        if args.profile:
            profile(cases, plan.requests * 4)
    results = compression(plan, gunicorn_environ(BROWSER), quality)
    report_gzip(plan, results, Compression().max_random_bytes)
    report_brotli(plan, results, quality)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
