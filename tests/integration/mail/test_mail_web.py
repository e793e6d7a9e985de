"""The native path's web server with a real nginx: ``salt-call --local`` as mail1 (scratch
``mailha_root``) writes the rendered site, the health page and removes Debian's default site link,
then starts nginx (the test ``service`` provider, _modules/mailsvc.py: ``nginx -t`` first, then
``nginx -g 'daemon off;'``) behind the vmail guard. The balancers' checks then get exactly the
health page over http and https, with the site's certificate.

nginx runs with a main config standing in for Debian's nginx.conf: it includes the scratch root's
conf.d/*.conf and sites-enabled/*, and that sites-enabled holds Debian's default site moved to the
test's http port, so nginx would refuse to start (two default servers) if the default link stayed.
The pillar's http/https services get free loopback ports and mail1 listens on 127.0.0.1 only.
The rendered site names the pillar's web root, which the health page state writes under the
scratch root: the pillar's web root is a link to that copy.

Then Debian's ldirectord, with the ldirectord.cf our lb renderer makes, checks the rendered nginx
sites of two real servers in network namespaces (standard ports 80/443, as in production): the
node serving the health page is up for http and https, the one serving other content is down.
"""
import copy
import http.client
import os
import pathlib
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap

import pytest
import yaml

from salt_mailha.core import health, lb
from salt_mailha.core import mail as core_mail
from salt_mailha.core.model import load_site, parse_site
from tests.integration.lb.conftest import lab_pillar
from tests.integration.lb.test_ldirectord_checks import judged as ldirectord_judged
from tests.integration.mail.conftest import (
    MODULES,
    OPENSSL,
    SALT_CALL,
    _pid_alive,
    _traversable_dir,
    mount_tmpfs,
    state_results,
    umount,
)
from tests.support import netns
from tests.support.daemon import Daemon, pid_alive, wait_until
from tests.support.example import example_pillar
from tests.support.slapd import free_port

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"),
                       reason="nginx missing: apt-get install nginx-light (scripts/setup-host.sh)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="nginx on the test's ports and the vmail tmpfs need root"),
]

NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
REPO = pathlib.Path(__file__).resolve().parents[3]
DEBIAN_DEFAULT = pathlib.Path("/etc/nginx/sites-available/default")

# mail.sls's native web part (the services need no rehearsal guard here: the service provider
# runs the test's own nginx)
WEB_SLS = """
{%- from "mailha/macros.jinja" import rendered_files %}
{{ rendered_files('mail') }}

mailha-health-page:
  mailha_mail.health_page: []

mailha-nginx-default-site:
  mailha_mail.default_site_disabled: []

mailha-vmail-guard:
  mailha_mail.share_guard: []

mailha-service-nginx:
  service.running:
    - name: nginx
    - enable: True
    - require:
      - mailha_mail: mailha-vmail-guard
      - mailha_mail: mailha-health-page
    - watch:
      - mailha_site: mailha-file-nginx
      - mailha_mail: mailha-nginx-default-site
"""


class WebNode:
    def __init__(self, base):
        self.base = base
        self.root = base / "root"
        self.http_port, self.https_port = free_port(), free_port()
        pillar = example_pillar()
        self.secrets = [s.reveal() for s in parse_site(copy.deepcopy(pillar["mailha"])).secrets()]
        pillar["mailha"]["services"]["http"]["port"] = self.http_port
        pillar["mailha"]["services"]["https"]["port"] = self.https_port
        mail = pillar["mailha"]["mail"]
        mail["web_root"] = str(base / "www")
        mail["tls"] = {"cert": str(base / "tls" / "cert.pem"), "key": str(base / "tls" / "key.pem")}
        mail["instances"] = {"mail1": {"bind_address": "127.0.0.1"}}
        self.pillar = pillar
        self.site = parse_site(copy.deepcopy(pillar["mailha"]))
        self.page, self.content = core_mail.health_page(self.site)
        self.conf_file = self.root / "etc/nginx/conf.d/mailha.conf"
        self.default_link = self.root / "etc/nginx/sites-enabled/default"
        self.pidfile = base / "nginx.pid"
        self.outputs = []

    def prepare(self):
        b, r = self.base, self.root
        for d in ("srv", "conf", "pillar", "tls", "nginx-tmp", "debian-www"):
            (b / d).mkdir()
        (r / "etc/nginx/sites-available").mkdir(parents=True)
        (r / "etc/nginx/sites-enabled").mkdir()
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=mail.example.net", "-keyout", str(b / "tls/key.pem"), "-out", str(b / "tls/cert.pem")],
                       check=True, capture_output=True, timeout=60)
        os.chmod(b / "tls/key.pem", 0o600)
        # the rendered site names the pillar's web root; the health page state writes it under the root
        scratch_www = r / str(b / "www").lstrip("/")
        scratch_www.mkdir(parents=True)
        (b / "www").symlink_to(scratch_www)
        # Debian's default site, moved to the test's http port; its page is not ours
        default = DEBIAN_DEFAULT.read_text() if DEBIAN_DEFAULT.exists() else (
            "server {\n\tlisten 80 default_server;\n\troot /var/www/html;\n\tserver_name _;\n}\n")
        default = default.replace("listen 80 default_server", f"listen 127.0.0.1:{self.http_port} default_server")
        default = "\n".join(line for line in default.splitlines() if "[::]:80" not in line) + "\n"
        default = default.replace("root /var/www/html", f"root {b / 'debian-www'}")
        (b / "debian-www" / self.site.ldirectord.health_page).write_text("debian default page\n")
        (r / "etc/nginx/sites-available/default").write_text(default)
        # enabled as the package does it (a link into sites-available), under the root
        self.default_link.symlink_to(r / "etc/nginx/sites-available/default")
        # stands in for Debian's nginx.conf (same includes), with the test's pid, logs and temp dirs
        tmp = b / "nginx-tmp"
        (b / "nginx.conf").write_text(textwrap.dedent(f"""\
            user www-data;
            worker_processes 1;
            pid {self.pidfile};
            error_log {b}/error.log;
            events {{ worker_connections 64; }}
            http {{
                include /etc/nginx/mime.types;
                default_type application/octet-stream;
                access_log {b}/access.log;
                client_body_temp_path {tmp}/body;
                proxy_temp_path {tmp}/proxy;
                fastcgi_temp_path {tmp}/fastcgi;
                uwsgi_temp_path {tmp}/uwsgi;
                scgi_temp_path {tmp}/scgi;
                include {r}/etc/nginx/conf.d/*.conf;
                include {r}/etc/nginx/sites-enabled/*;
            }}
            """))
        nginx = [NGINX, "-e", f"{b}/error.log", "-c", str(b / "nginx.conf")]
        spec = {"argv": [*nginx, "-g", "daemon off;"], "check": [*nginx, "-t", "-q"],
                "pidfile": str(self.pidfile), "log": str(b / "nginx.stdout")}
        (b / "srv" / "web.sls").write_text(WEB_SLS)
        (b / "pillar" / "top.sls").write_text("base:\n  '*':\n    - mailha\n")
        (b / "pillar" / "mailha.sls").write_text(yaml.safe_dump(self.pillar))
        (b / "conf" / "minion").write_text(yaml.safe_dump({
            "id": "mail1", "file_client": "local", "mailha_root": str(r),
            "file_roots": {"base": [str(b / "srv"), str(REPO / "states")]},
            "pillar_roots": {"base": [str(b / "pillar")]}, "root_dir": str(b / "salt"),
            "log_file": str(b / "minion.log"), "log_level_logfile": "debug", "module_dirs": [str(MODULES)],
            "providers": {"service": "mailsvc"}, "mailha_test_mail_services": {"nginx": spec},
        }))
        # the vmail share "mounted" (this kernel has no NFS): the guard lets nginx start
        self.vmail = r / self.site.mail.vmail.path.lstrip("/")
        self.vmail.mkdir(parents=True)
        mount_tmpfs(self.vmail, self.site.mail.vmail.uid, self.site.mail.vmail.gid)

    def apply(self, test=False):
        argv = [str(SALT_CALL), "--local", "-c", str(self.base / "conf"), "--out", "json", "-l", "quiet",
                "--skip-grains", "state.apply", "web"] + (["test=True"] if test else [])
        return state_results(argv, self.outputs)

    def nginx_pid(self):
        return _pid_alive(self.pidfile)

    def logs(self):
        out = list(self.outputs)
        for name in ("minion.log", "error.log", "nginx.stdout", "access.log"):
            p = self.base / name
            if p.exists():
                out.append(p.read_text(errors="replace"))
        return "\n".join(out)

    def stop(self):
        pid = self.nginx_pid()
        if pid:
            os.kill(pid, 15)
            wait_until(lambda: not pid_alive(pid), 30, what=f"nginx pid {pid} exit")


@pytest.fixture
def web_node():
    node = WebNode(_traversable_dir("mailha-web-"))
    try:
        node.prepare()
        yield node
    finally:
        node.stop()
        if getattr(node, "vmail", None) is not None:
            umount(node.vmail)
        shutil.rmtree(node.base, ignore_errors=True)


def client_tls():
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test's self-signed certificate
    return ctx


def get(port, path, tls=False, ctx=None):
    """``(status, headers, body)`` of one GET to 127.0.0.1:port (a new connection)."""
    if tls:
        conn = http.client.HTTPSConnection("127.0.0.1", port, timeout=5, context=ctx or client_tls())
    else:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": "mail.example.net"})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read().decode()
    finally:
        conn.close()


def served_certificate(port):
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, client_tls().wrap_socket(raw) as s:
        return s.getpeercert(binary_form=True)


def accepts(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_nginx_serves_the_health_page_over_http_and_https(web_node):
    w = web_node
    path = "/" + w.site.ldirectord.health_page
    ids = ("mailha-file-nginx", "mailha-health-page", "mailha-nginx-default-site", "mailha-service-nginx")

    ret = w.apply(test=True)
    assert {i: ret[i]["result"] for i in ids} == dict.fromkeys(ids, None), ret
    diff = ret["mailha-file-nginx"]["changes"]["diff"]
    assert f"+    listen 127.0.0.1:{w.http_port} default_server;" in diff
    assert f"+    listen 127.0.0.1:{w.https_port} ssl default_server;" in diff
    assert ret["mailha-nginx-default-site"]["changes"] == {
        core_mail.NGINX_DEFAULT_SITE: {"old": str(w.root / "etc/nginx/sites-available/default"), "new": None}}
    assert not w.conf_file.exists() and w.default_link.is_symlink()
    assert not os.path.exists(w.page) and w.nginx_pid() is None and not accepts(w.http_port)

    ret = w.apply()
    bad = {k: v["comment"] for k, v in ret.items() if v["result"] is not True}
    assert not bad, f"{bad}\n{w.logs()[-3000:]}"
    assert ret["mailha-service-nginx"]["changes"], ret["mailha-service-nginx"]
    assert not w.default_link.exists() and not w.default_link.is_symlink()
    wait_until(lambda: accepts(w.http_port) and accepts(w.https_port), 30, what="nginx listening")

    for port, tls in ((w.http_port, False), (w.https_port, True)):
        status, headers, body = get(port, path, tls)
        assert (status, body) == (200, w.content), (port, status, body)
        assert body.strip() == w.site.ldirectord.health_content
        assert headers["Server"] == "nginx" and headers["Content-Type"].startswith("text/plain")
        status, _, body = get(port, "/", tls)
        assert status == 403 and "Index of" not in body  # no directory listing
    assert served_certificate(w.https_port) == ssl.PEM_cert_to_DER_cert((w.base / "tls/cert.pem").read_text())
    # the beacon's prober, with ldirectord's request/receive
    for port, check in ((w.http_port, "http"), (w.https_port, "https")):
        r = health.probe("127.0.0.1", port, check, timeout=5, http_path=path,
                         http_expect=w.site.ldirectord.health_content)
        assert r.ok, r.detail
        assert not health.probe("127.0.0.1", port, check, timeout=5, http_path=path, http_expect="maintenance").ok

    pid = w.nginx_pid()
    for test in (True, False):
        ret = w.apply(test=test)
        assert all(v["result"] is True and not v["changes"] for v in ret.values()), ret
    assert w.nginx_pid() == pid

    # a local edit: test=True shows the diff and leaves file and nginx alone; apply restores, restarts
    edited = w.conf_file.read_text().replace("autoindex off;", "autoindex on;")
    w.conf_file.write_text(edited)
    ret = w.apply(test=True)
    assert ret["mailha-file-nginx"]["result"] is None
    diff = ret["mailha-file-nginx"]["changes"]["diff"]
    assert "-    autoindex on;" in diff and "+    autoindex off;" in diff
    assert w.conf_file.read_text() == edited and w.nginx_pid() == pid
    ret = w.apply()
    assert all(v["result"] is True for v in ret.values()), ret
    assert ret["mailha-service-nginx"]["changes"], "the changed site must restart nginx"
    assert "autoindex off;" in w.conf_file.read_text()
    new_pid = wait_until(w.nginx_pid, 30, what="nginx restarted")
    assert new_pid != pid
    wait_until(lambda: accepts(w.http_port), 30, what="nginx listening again")
    status, _, body = get(w.http_port, path)
    assert (status, body) == (200, w.content)

    text = w.logs()
    leaked = [s for s in w.secrets if s in text]
    assert not leaked, "a pillar secret leaked into salt output, the minion log or nginx's logs"


NET = "10.99.79"


def health_page_servers(lan, pillar, base):
    """Real nginx on mail1 (serving the health page) and mail2 (a page with other content) in
    ``lan``, each with the site's rendered nginx site: the Daemons, started."""
    site = load_site(pillar)
    procs = []
    for n, page in (("mail1", site.ldirectord.health_content), ("mail2", "maintenance")):
        d = base / n
        d.mkdir()
        node_pillar = copy.deepcopy(pillar)
        node_pillar["mailha"]["mail"]["web_root"] = str(d / "www")
        node_site = load_site(node_pillar)
        path, _ = core_mail.health_page(node_site)
        os.makedirs(os.path.dirname(path))
        pathlib.Path(path).write_text(page + "\n")
        (d / "mailha.conf").write_text(core_mail.render_nginx_site(node_site, node_site.node(n)))
        conf = nginx_main_conf(d, d / "mailha.conf")
        procs.append(Daemon(f"nginx-{n}", lan.argv(n, [NGINX, "-e", d / "error.log", "-c", conf, "-g",
                                                       "daemon off;"]), d / "nginx.stdout").start())
    # listening before any check runs: a check that meets a closed port judges the server down
    # for the wrong reason, which is not what the tests mean to show
    probe = "import socket, sys; [socket.create_connection((sys.argv[1], p), 1).close() for p in (80, 443)]"
    for n in ("mail1", "mail2"):
        addr = site.node(n).address("public")
        wait_until(lambda a=addr, h=n: lan.run(h, [sys.executable, "-c", probe, a],
                                               check=False).returncode == 0, 30, what=f"nginx on {n}")
    return procs


def nginx_main_conf(base, site_conf):
    """Debian's nginx.conf stand-in for one real server: pid, logs and temp dirs in ``base``."""
    tmp = base / "nginx-tmp"
    tmp.mkdir()
    conf = base / "nginx.conf"
    conf.write_text(textwrap.dedent(f"""\
        user www-data;
        worker_processes 1;
        pid {base}/nginx.pid;
        error_log {base}/error.log;
        events {{ worker_connections 64; }}
        http {{
            include /etc/nginx/mime.types;
            access_log {base}/access.log;
            client_body_temp_path {tmp}/body;
            proxy_temp_path {tmp}/proxy;
            fastcgi_temp_path {tmp}/fastcgi;
            uwsgi_temp_path {tmp}/uwsgi;
            scgi_temp_path {tmp}/scgi;
            include {site_conf};
        }}
        """))
    return conf


@pytest.mark.skipif(not shutil.which("ldirectord"), reason="ldirectord missing: run scripts/setup-host.sh")
@pytest.mark.skipif(subprocess.run(["perl", "-MLWP::Protocol::https", "-e1"], capture_output=True).returncode != 0,
                    reason="ldirectord's https check needs liblwp-protocol-https-perl (ldirectord recommends it)")
def test_ldirectord_marks_the_rendered_nginx_up():
    ok, reason = netns.available()
    if not ok:
        pytest.skip(reason)
    base = _traversable_dir("mailha-web-ld-")
    lan, procs = None, []
    try:
        pillar = lab_pillar(NET, ldirectord={"checkinterval": 1, "checktimeout": 2, "failurecount": 1})
        pillar["mailha"]["services"] = {k: v for k, v in pillar["mailha"]["services"].items()
                                        if v["check"] in ("http", "https")}
        pillar["mailha"]["mail"]["tls"] = {"cert": str(base / "cert.pem"), "key": str(base / "key.pem")}
        subprocess.run([OPENSSL, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
                        "/CN=mail.example.net", "-keyout", str(base / "key.pem"), "-out", str(base / "cert.pem")],
                       check=True, capture_output=True, timeout=60)
        lan = netns.Lan("web", bridge_address=f"{NET}.254/24")
        site = load_site(pillar)
        for n in ("lb1", "mail1", "mail2"):
            lan.add_host(n, f"{site.node(n).address('public')}/24")
        procs += health_page_servers(lan, pillar, base)
        reals = {n: site.node(n).address("public") for n in ("mail1", "mail2")}
        cf = base / "ldirectord.cf"
        cf.write_text(lb.render_ldirectord_cf(site, site.node("lb1"), maintenancedir=str(base / "maint"),
                                              logfile=str(base / "ldirectord.log")))
        cf.chmod(0o600)
        (base / "maint").mkdir()
        vip = site.vips["mail"].address

        def judged(want, env, log):
            return ldirectord_judged(lan, cf, log, env, want)

        # ldirectord's https check verifies the chain (only the host name check is off): a
        # certificate the balancer does not trust (self-signed, Debian's snakeoil) is "down" ...
        untrusted = {k: v for k, v in os.environ.items() if k not in ("SSL_CERT_FILE", "SSL_CERT_DIR")}
        log = judged({(f"{reals['mail1']}:80", f"{vip}:80"): "up", (f"{reals['mail1']}:443", f"{vip}:443"): "down"},
                     untrusted, base / "ldirectord-untrusted.out")
        assert f"Can't connect to {reals['mail1']}:443 (certificate verify failed)" in log
        # ... and "up" once the balancer trusts the site's CA (here: IO::Socket::SSL's SSL_CERT_FILE)
        want = {(f"{reals[n]}:{port}", f"{vip}:{port}"): state
                for n, state in (("mail1", "up"), ("mail2", "down")) for port in (80, 443)}
        judged(want, dict(untrusted, SSL_CERT_FILE=str(base / "cert.pem")), base / "ldirectord.out")
    finally:
        for p in reversed(procs):
            p.stop()
        if lan is not None:
            lan.close()
        shutil.rmtree(base, ignore_errors=True)
