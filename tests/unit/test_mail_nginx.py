"""Unit tests of the native path's web server (salt_mailha.core.mail): which nodes get it, where
it listens (the mail VIP's http/https services), its TLS files and web root, and the render
registry entry. nginx itself loads these files in tests/integration/mail/test_mail_web.py (this file: the model side)."""
import copy
import re

import pytest

from salt_mailha.core import mail, render
from salt_mailha.core.errors import MailhaError, ValidationError
from salt_mailha.core.model import parse_site
from tests.support.example import example_pillar

NATIVE = example_pillar()["mailha"]


def site(services=None, instances=None, iredmail=False, **mail_overrides):
    data = copy.deepcopy(example_pillar(iredmail=iredmail)["mailha"])
    if services is not None:
        data["services"] = services
    data["mail"].update(mail_overrides)
    if instances is not None:
        data["mail"]["instances"] = instances
    return parse_site(data)


def listens(text):
    return re.findall(r"^\s*listen (.+);$", text, re.M)


def directive(text, name):
    return re.findall(rf"^\s*{name} (.+);$", text, re.M)


WEB = {"http": {"vip": "mail", "port": 8080, "check": "http", "scheduler": "sh"},
       "https": {"vip": "mail", "port": 8443, "check": "https", "scheduler": "sh"},
       "imaps": {"vip": "mail", "port": 993, "check": "imaps", "scheduler": "wrr"},
       "mysql": {"vip": "db", "port": 3306, "check": "mysql", "scheduler": "wrr"}}


def test_example_serves_the_health_page_on_80_and_443():
    s = parse_site(copy.deepcopy(NATIVE))
    text = mail.render_nginx_site(s, s.node("mail1"))
    assert listens(text) == ["80 default_server", "443 ssl default_server"]
    assert directive(text, "root") == ["/var/www/html"]
    assert directive(text, "ssl_certificate") == ["/etc/ssl/certs/iRedMail.crt"]
    assert directive(text, "ssl_certificate_key") == ["/etc/ssl/private/iRedMail.key"]
    assert directive(text, "autoindex") == ["off"]
    assert directive(text, "server_tokens") == ["off"]
    assert "location = /ldirectord.txt {" in text


def test_ports_web_root_page_and_certificate_come_from_the_model():
    data = copy.deepcopy(NATIVE)
    data["ldirectord"]["health_page"] = "health/check.txt"
    data["services"], data["mail"]["web_root"] = WEB, "/srv/www"
    data["mail"]["tls"] = {"cert": "/etc/mail/c.pem", "key": "/etc/mail/k.pem"}
    s = parse_site(data)
    text = mail.render_nginx_site(s, s.node("mail2"))
    assert listens(text) == ["8080 default_server", "8443 ssl default_server"]
    assert directive(text, "root") == ["/srv/www"]
    assert directive(text, "ssl_certificate") == ["/etc/mail/c.pem"]
    assert directive(text, "ssl_certificate_key") == ["/etc/mail/k.pem"]
    assert "location = /health/check.txt {" in text
    # Dovecot presents the very same files
    dovecot = mail.render_dovecot_conf(s, s.node("mail2"))
    assert "ssl_cert = </etc/mail/c.pem" in dovecot and "ssl_key = </etc/mail/k.pem" in dovecot


def test_bind_address_of_the_instance():
    s = site(services=WEB, instances={"mail1": {"bind_address": "127.0.0.5"}})
    assert listens(mail.render_nginx_site(s, s.node("mail1"))) == ["127.0.0.5:8080 default_server",
                                                                    "127.0.0.5:8443 ssl default_server"]
    # the other node keeps every address (the VIP on lo included)
    assert listens(mail.render_nginx_site(s, s.node("mail2"))) == ["8080 default_server",
                                                                    "8443 ssl default_server"]


def test_http_only_needs_no_certificate():
    services = {k: v for k, v in WEB.items() if k != "https"}
    s = site(services=services)
    text = mail.render_nginx_site(s, s.node("mail1"))
    assert listens(text) == ["8080 default_server"]
    assert not directive(text, "ssl_certificate") and not directive(text, "ssl_certificate_key")


def test_no_secret_in_the_site():
    s = parse_site(copy.deepcopy(NATIVE))
    text = mail.render_nginx_site(s, s.node("mail1"))
    secrets = [x.reveal() for x in s.secrets()]
    assert secrets and not [x for x in secrets if x in text]
    assert not render.artifact("nginx").secret and render.artifact("nginx").mode == "0644"


def test_registry_gives_it_to_native_mail_nodes_only():
    native, iredmail = parse_site(copy.deepcopy(NATIVE)), site(iredmail=True)
    got = {n.id for n in native.nodes if "nginx" in {a.id for a in render.artifacts_for(native, n)}}
    assert got == {"mail1", "mail2"}
    # iRedMail's own nginx serves the page on its path
    assert not any("nginx" in {a.id for a in render.artifacts_for(iredmail, n)} for n in iredmail.nodes)
    a = render.artifact("nginx")
    assert (a.path, a.sls) == ("/etc/nginx/conf.d/mailha.conf", "mail")


def test_no_web_check_no_web_server():
    services = {k: v for k, v in WEB.items() if k not in ("http", "https")}
    s = site(services=services)
    assert not mail.serves_health_page(s, s.node("mail1"))
    assert not any(a.id == "nginx" for a in render.artifacts_for(s, s.node("mail1")))
    with pytest.raises(MailhaError, match=r"mailha:services.*check http or https"):
        mail.render_nginx_site(s, s.node("mail1"))


def test_two_web_services_on_one_port_refused_by_the_model():
    # one nginx listen per port: the model already refuses a second service on a VIP's port
    services = dict(WEB, https={"vip": "mail", "port": 8080, "check": "https", "scheduler": "sh"})
    with pytest.raises(ValidationError, match=r"mailha:services:https:port: port 8080 on the mail VIP"):
        site(services=services)


def test_web_services_of_the_db_vip_are_not_ours():
    services = dict(WEB, dbweb={"vip": "db", "port": 8081, "check": "http", "scheduler": "sh"})
    s = site(services=services)
    assert [w.service for w in mail.web_listeners(s, s.node("mail1"))] == ["http", "https"]


def test_mail_checks_include_the_web_checks():
    s = site(services=WEB, instances={"mail1": {"imaps_port": 10993}})
    assert mail.mail_checks(s, s.node("mail1")) == (
        ("http", "http", 8080, 8080), ("https", "https", 8443, 8443), ("imaps", "imaps", 993, 10993))
