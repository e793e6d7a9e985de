"""Secrets from the pillar, typed so they cannot be printed by accident.

``Secret`` never shows its value through ``str``, ``repr``, ``format`` or pickling-by-repr; code
that must place it in a config file or a protocol message calls ``reveal()`` explicitly.
``redact`` is the one helper that scrubs known secret values out of any text or nested data
before it reaches a state return, a comment, an event or a log line.
"""

import base64
import binascii
import hashlib
import hmac
import json
import re
import urllib.parse

REDACTED = "<redacted>"


class Secret:
    __slots__ = ("_value",)

    def __init__(self, value):
        if isinstance(value, Secret):
            value = value.reveal()
        self._value = str(value)

    def reveal(self):
        return self._value

    def __repr__(self):
        return f"Secret({REDACTED})"

    __str__ = __repr__

    def __format__(self, spec):
        return repr(self)

    def __eq__(self, other):
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self):
        return hash(("Secret", self._value))

    def __len__(self):
        return len(self._value)

    def __reduce__(self):
        # Pickling (Salt's msgpack/return paths) must not carry the value either.
        raise TypeError("a Secret cannot be serialized; reveal() it into the one place that needs it")


def redact(data, secrets):
    """Return ``data`` with every occurrence of each secret value replaced by ``<redacted>``.

    ``secrets`` is an iterable of ``Secret`` or plain strings. Works on str, bytes, and nested
    dict/list/tuple/set structures (keys included); other values pass through unchanged.
    """
    values = sorted(
        {s.reveal() if isinstance(s, Secret) else str(s) for s in secrets if s is not None},
        key=len,
        reverse=True,
    )
    values = [v for v in values if v]
    if not values:
        return data
    return _redact(data, values)


def _redact(data, values):
    if isinstance(data, Secret):
        return REDACTED
    if isinstance(data, str):
        for v in values:
            data = data.replace(v, REDACTED)
        return data
    if isinstance(data, bytes):
        for v in values:
            data = data.replace(v.encode(), REDACTED.encode())
        return data
    if isinstance(data, dict):
        return {_redact(k, values): _redact(v, values) for k, v in data.items()}
    if isinstance(data, (list, tuple, set)):
        return type(data)(_redact(v, values) for v in data)
    return data


def redact_diff(diff, secrets):
    """``redact`` for a unified diff of a file that holds secrets, including the secrets it held
    before: once a secret is rotated, the old value is no pillar secret any more, yet the diff's
    removed line still shows it (``-    auth_pass "<old>"``). Every line the diff adds or keeps that
    holds a redacted secret becomes a template (``    auth_pass "<redacted>"``); every removed line
    that the template matches, whatever stands where the secret was, is shown as the template. A
    removed line with no such counterpart (a secret the new file no longer holds at all) cannot
    be recognised here; the caller can withhold the whole diff of such a file."""
    text = redact(diff, secrets)
    lines = text.splitlines(keepends=True)
    templates, in_hunk = [], False
    for line in lines:
        in_hunk = in_hunk or line.startswith("@@")
        if in_hunk and line[:1] in "+ " and REDACTED in line:
            body = line[1:].rstrip("\r\n")
            pattern = "(.+?)".join(re.escape(part) for part in body.split(REDACTED))
            templates.append((re.compile(f"^{pattern}$", re.S), body))
    if not templates:
        return text
    out, in_hunk = [], False
    for line in lines:
        in_hunk = in_hunk or line.startswith("@@")
        if in_hunk and line.startswith("-"):
            body = line[1:].rstrip("\r\n")
            for rx, template in templates:
                if rx.match(body):
                    line = "-" + template + line[1 + len(body):]
                    break
        out.append(line)
    return "".join(out)


def ssha(password, salt):
    """``{SSHA}`` of ``password`` with ``salt`` (bytes), as slappasswd writes it."""
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def slapd_rootpw_hash(rootpw, site_name, node_id):
    """The hashed rootpw of ``node_id``'s native slapd.conf. Its salt is derived from the secret
    and the node, so a render stays deterministic (same model, same bytes) and the hash can be
    redacted like the secret it derives from (``Site.secrets``)."""
    value = rootpw.reveal() if isinstance(rootpw, Secret) else str(rootpw)
    salt = hmac.new(value.encode(), f"slapd-rootpw:{site_name}:{node_id}".encode(), hashlib.sha256).digest()[:8]
    return ssha(value, salt)


# ------------------------------------------------------------------------------ derived forms
#
# A secret can reach a file, a diff, a query or a log line in another form than its value: hashed
# (slapd.conf's rootpw), derived (iRedMail's service passwords), cut (keepalived reads 8
# characters of auth_pass) or encoded (a shell word, a SQL literal, a URL's userinfo, JSON).
# ``derived_secrets`` lists every such form of a site's secrets so that ``Site.secrets()`` (and so
# ``redact``) and the tests that grep every output know them too.

KEEPALIVED_AUTH_PASS_LEN = 8  # keepalived uses at most this many characters of auth_pass


def mysql_native_password_hash(password):
    """MySQL's ``mysql_native_password`` hash (``*`` + 40 upper hex, ``PASSWORD()``), as
    ``mysql.user.authentication_string``, ``SHOW GRANTS`` and ``SHOW CREATE USER`` show it."""
    return "*" + hashlib.sha1(hashlib.sha1(password.encode()).digest()).hexdigest().upper()


_MYSQL_ESCAPES = {"\\": "\\\\", "\0": "\\0", "\n": "\\n", "\r": "\\r", "\x1a": "\\Z", "'": "\\'", '"': '\\"'}


def mysql_escaped(value):
    """``value`` as PyMySQL escapes a query parameter into the SQL text it sends (and a server
    error may quote)."""
    return "".join(_MYSQL_ESCAPES.get(c, c) for c in value)


def shell_quoted(value):
    """``value`` as one single-quoted POSIX shell word (iRedMail's ``config`` is sourced by bash)."""
    return "'" + value.replace("'", "'\"'\"'") + "'"


def double_quoted(value):
    """``value`` between double quotes with backslash escapes, as slapd.conf, my.cnf, Dovecot
    and Postfix quote a value."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def encoded_forms(value):
    """Forms of one secret text that may stand for it in a file, a query, a URL or a serialized
    output, and that do not contain ``value`` itself (redacting ``value`` already covers those):
    shell, SQL, quoted-string, URL, JSON and Python-repr escapes when they change the text;
    base64 and hex of its bytes; its ``mysql_native_password`` hash."""
    value = value.reveal() if isinstance(value, Secret) else str(value)
    raw = value.encode()
    forms = [
        shell_quoted(value), mysql_escaped(value), double_quoted(value),
        double_quoted(value)[1:-1],  # inside a longer quoted value: my.cnf's "user:password"
        urllib.parse.quote(value, safe=""), urllib.parse.quote_plus(value),
        json.dumps(value)[1:-1], json.dumps(value, ensure_ascii=False)[1:-1], repr(value)[1:-1],
        base64.b64encode(raw).decode(), base64.urlsafe_b64encode(raw).decode(),
        base64.b64encode(raw).decode().rstrip("="), raw.hex(), raw.hex().upper(),
        mysql_native_password_hash(value),
    ]
    return _unique(f for f in forms if f and value not in f)


def tsig_forms(secret):
    """Forms of a base64 TSIG secret beyond its text: the canonical base64 of its key bytes (what
    BIND and dnspython print back when the pillar's text is spaced or unpadded), their hex, and the
    body of their Python ``bytes`` repr (a logged dnspython keyring). None if it is not base64."""
    value = secret.reveal() if isinstance(secret, Secret) else str(secret)
    try:
        key = base64.b64decode("".join(value.split()), validate=True)
    except (binascii.Error, ValueError):
        return ()
    if not key:
        return ()
    return _unique(f for f in (base64.b64encode(key).decode(), key.hex(), repr(key)[2:-1])
                   if f and f not in value and len(f) >= 8)


def keepalived_auth_pass_forms(auth_pass):
    """What keepalived keeps of ``auth_pass``: its first 8 characters, when it is longer (the
    model refuses a longer one; a refused value must not leak either)."""
    value = auth_pass.reveal() if isinstance(auth_pass, Secret) else str(auth_pass)
    return (value[:KEEPALIVED_AUTH_PASS_LEN],) if len(value) > KEEPALIVED_AUTH_PASS_LEN else ()


def derived_secrets(site, secrets):
    """Every form derived from the site's ``secrets`` (its ``Secret`` values) that any code writes,
    sends or may print, as ``Secret``: the native slapd.conf rootpw hash of each mail node, the
    iRedMail service passwords derived from the admin password, keepalived's 8-character
    auth_pass, the TSIG key bytes, and the ``encoded_forms`` of all of them. Pure and
    deterministic; duck-typed on ``Site`` (``core.model`` imports this module)."""
    derived = []
    ldap = getattr(site, "ldap", None)
    if ldap is not None and ldap.rootpw is not None:
        derived += [slapd_rootpw_hash(ldap.rootpw, site.name, n.id) for n in site.nodes_with("mail")]
    mail = getattr(site, "mail", None)
    if mail is not None and getattr(mail, "iredmail", None) is not None and mail.iredmail.admin_password is not None:
        from . import mail as core_mail  # imported here: the iRedMail formulas live with their renderer

        derived += [core_mail.derived_secret(site, name) for name in (*core_mail.IREDMAIL_DERIVED, "LDAP_BINDPW")]
    ka = getattr(site, "keepalived", None)
    if ka is not None and ka.auth_pass is not None:
        derived += keepalived_auth_pass_forms(ka.auth_pass)
    dns = getattr(site, "dns", None)
    if dns is not None and dns.tsig is not None and dns.tsig.secret is not None:
        derived += tsig_forms(dns.tsig.secret)
    base = [s.reveal() if isinstance(s, Secret) else str(s) for s in secrets if s is not None]
    out = list(derived)
    for value in base + derived:
        out += encoded_forms(value)
    known = set(base)
    return tuple(Secret(v) for v in _unique(out) if v not in known)


def _unique(values):
    seen, out = set(), []
    for v in values:
        if v not in seen:
            seen.add(v)
            out.append(v)
    return tuple(out)
