"""Secrets from the pillar, typed so they cannot be printed by accident.

``Secret`` never shows its value through ``str``, ``repr``, ``format`` or pickling-by-repr; code
that must place it in a config file or a protocol message calls ``reveal()`` explicitly.
``redact`` is the one helper that scrubs known secret values out of any text or nested data
before it reaches a state return, a comment, an event or a log line.
"""

import base64
import hashlib
import hmac

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
