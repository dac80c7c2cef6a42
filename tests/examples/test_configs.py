"""The deploy configs in examples/ parse: haproxy -c, nginx -t, apache2 -t."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.servers import ApacheServer, NginxServer, find_binary, free_port

EXAMPLES = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(__file__))), "examples")


def read(name: str) -> str:
    with open(os.path.join(EXAMPLES, name)) as config:
        return config.read()


def check(command: list[str]) -> str:
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


@pytest.mark.parametrize("name", ["haproxy.cfg", "haproxy-sticky.cfg"])
def test_haproxy_config_is_valid(name):
    output = check([find_binary("haproxy"), "-c", "-f", os.path.join(EXAMPLES, name)])
    assert "Configuration file is valid" in output


def test_nginx_reverse_proxy_config_is_valid(tmp_path):
    nginx = NginxServer(read("nginx-proxy.conf"))
    nginx.workdir = str(tmp_path)
    check([*nginx.command(), "-t"])


class _ProxyApache(ApacheServer):
    modules = (*ApacheServer.modules, "proxy", "proxy_http", "proxy_balancer",
               "lbmethod_byrequests", "slotmem_shm")  # fmt: skip


def test_apache_reverse_proxy_config_is_valid(tmp_path):
    apache = _ProxyApache(read("apache-proxy.conf"))
    apache.workdir, apache.port = str(tmp_path), free_port()
    check([*apache.command(), "-t"])
