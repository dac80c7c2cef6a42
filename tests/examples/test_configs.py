"""The deploy configs in examples/ parse: haproxy -c, nginx -t, apache2 -t."""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest

from examples.cluster import haproxy_config
from scalekit.cli import build_parser
from tests.servers import ApacheServer, NginxServer, find_binary, free_port

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "examples")


def read(name: str) -> str:
    return read_path(os.path.join(EXAMPLES, name))


def check(command: list[str]) -> str:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def make_certificate(folder: str) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1: ``(certificate, certificate + key)``, PEM."""
    cert, key, both = (os.path.join(folder, n) for n in ("cert.pem", "key.pem", "both.pem"))
    check([find_binary("openssl"), "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days",
           "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
           "-keyout", key, "-out", cert])  # fmt: skip
    with open(both, "w") as out:
        out.write(read_path(cert) + read_path(key))
    return cert, both


def read_path(path: str) -> str:
    with open(path) as file:
        return file.read()


@pytest.mark.parametrize("name", ["haproxy.cfg", "haproxy-sticky.cfg"])
def test_haproxy_config_is_valid(name, tmp_path):
    """As written, with only the certificate's path and the ports made local."""
    _, pem = make_certificate(str(tmp_path))
    config = haproxy_config(name, port=free_port(), nodes={}, tls=(free_port(), pem))
    (tmp_path / name).write_text(config)
    output = check([find_binary("haproxy"), "-c", "-f", str(tmp_path / name)])
    assert "Configuration file is valid" in output


@pytest.mark.parametrize("name", ["nginx-proxy.conf", "nginx.conf"])
def test_nginx_config_is_valid(name, tmp_path):
    nginx = NginxServer(read(name))
    nginx.workdir = str(tmp_path)
    check([*nginx.command(), "-t"])


class ProxyApache(ApacheServer):
    """Apache with the modules examples/apache-proxy.conf needs."""

    modules = (*ApacheServer.modules, "proxy", "proxy_http", "proxy_balancer",
               "lbmethod_byrequests", "slotmem_shm", "unique_id")  # fmt: skip


def test_apache_reverse_proxy_config_is_valid(tmp_path):
    apache = ProxyApache(read("apache-proxy.conf"))
    apache.workdir, apache.port = str(tmp_path), free_port()
    check([*apache.command(), "-t"])


def test_every_crontab_line_is_a_command_line_scalekit_accepts():
    """examples/crontab's jobs (the commented demo ones too) parse with the commands'
    own parsers: an option renamed or removed fails here, not in a cron mail."""
    with open(os.path.join(EXAMPLES, "crontab")) as crontab:
        text = crontab.read()
    jobs = [line.split("$SCALEKIT ", 1)[1] for line in text.splitlines() if "$SCALEKIT " in line]
    assert len(jobs) >= 6
    for job in jobs:
        argv = shlex.split(job)
        build_parser(argv[0]).parse_args(argv)  # argparse exits 2 on a bad line
