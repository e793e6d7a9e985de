"""What each config format can carry: per pillar value and output format, either the renderer
encodes the value so that the format's own parser reads it back identically, or the model refuses
it with the key and the reason. Pure: ``parse_site`` calls ``site_problems`` before anything is
rendered or written, so ``mailha_site.validate`` and the first step of ``state.apply`` refuse
what a renderer could not write.

Two tables make the rules:

* ``FORMATS``: per output format, how the renderer writes a value (``encoding``) and what the
  format's parser cannot carry even so (``refuses``). Each rule was read off the real parser
  (``tests/integration/formats/test_oracles.py`` feeds them generated values):

  - ``mariadb-option-file`` (galera.cnf): double-quoted, ``\\`` and ``"`` backslash-escaped;
    refuses control characters.
  - ``keepalived``: double-quoted (keepalived has no escapes); refuses ``"``, control characters
    and an auth_pass over 8 UTF-8 bytes.
  - ``ldirectord``: ``key="value"``, read up to the last ``"`` of the line; refuses ``#``
    (ldirectord cuts the line there) and control characters (a tab becomes 4 spaces).
  - ``ldirectord-receive``: the same, and the value is a Perl regular expression: refuses
    ``\\ ^ $ | ? * + ( ) [ ] { }`` too.
  - ``slapd`` (slapd.conf and olcSyncrepl): double-quoted; refuses ``"`` and ``\\`` (cn=config
    writes a quoted value back unescaped) and control characters.
  - ``postfix-table`` (``ldap:*.cf``): ``name = value``; refuses blanks at either end (Postfix strips
    them) and control characters. ``postfix-search-base`` refuses ``%`` too (the table expands it).
  - ``dovecot-ldap``: double-quoted, ``\\`` and ``"`` backslash-escaped; refuses control characters.
  - ``shell`` (iRedMail's config): single-quoted, ``'`` as ``'"'"'``; refuses control characters.
  - ``named``: a domain name, quoted and in a file path; refuses anything but labels of letters,
    digits and ``-``.

  Every format also refuses text with no UTF-8 form (lone surrogates), and U+2028/U+2029: no
  file can hold the first, and Python's ``splitlines`` (the slapd.conf merge, the diffs) breaks
  a line at the others.

* ``routes(site)``: which pillar value reaches which formats, for this site (the LDAP root
  password reaches the syncrepl statement only when replication binds as the rootdn, Postfix and
  Dovecot only when ``mail:lookup`` sets no DN of its own, ...). DNs are also checked as DNs
  (``dn_problem``): salt-mailha writes them as they are, so RFC 4514 specials, which would need a
  backslash escape, are refused.

``site_problems`` also refuses what a state would otherwise refuse only after other files were
written: a health page outside the web root, a suffix whose entry the native path cannot create.

Messages name the key, say what the value contains and which file cannot carry it, and never
show a secret's value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from .errors import ValidationError

# ------------------------------------------------------------------------- characters


def describe_char(c):
    """A character as a message names it (never the whole value)."""
    names = {"\n": "a line break", "\r": "a carriage return", "\t": "a tab", "\0": "a NUL character",
             '"': "a double quote", "\\": "a backslash", "#": "a '#'", "%": "a '%'", " ": "a space"}
    if c in names:
        return names[c]
    if _is_control(c):
        return f"a control character (U+{ord(c):04X})"
    if c in "\u2028\u2029":
        return f"a Unicode line separator (U+{ord(c):04X})"
    if 0xD800 <= ord(c) <= 0xDFFF:
        return f"a lone surrogate (U+{ord(c):04X}) that has no UTF-8 form"
    return f"{c!r}"


def _is_control(c):
    o = ord(c)
    return o < 0x20 or 0x7F <= o <= 0x9F


def _first(value, pred):
    return next((c for c in value if pred(c)), None)


def _universal(value):
    """What no file of ours can hold: control characters, Unicode line separators (Python's
    ``splitlines``, which the merge and diff code uses, cuts a line there), text without a UTF-8
    form."""
    c = _first(value, lambda ch: _is_control(ch) or ch in "\u2028\u2029" or 0xD800 <= ord(ch) <= 0xDFFF)
    return f"contains {describe_char(c)}" if c is not None else None


def _refusing(chars):
    def check(value):
        found = _universal(value)
        if found:
            return found
        c = _first(value, lambda ch: ch in chars)
        return f"contains {describe_char(c)}" if c is not None else None
    return check


def _postfix(value):
    found = _universal(value)
    if found:
        return found
    if value != value.strip(" "):
        return "starts or ends with a blank (Postfix strips it)"
    return None


def _postfix_search_base(value):
    return _postfix(value) or _refusing("%")(value)


_NAMED_NAME = re.compile(r"^(?=.{1,253}\.?$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
                         r"(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*\.?$")


def _named(value):
    found = _universal(value)
    if found:
        return found
    if not _NAMED_NAME.fullmatch(value):
        bad = _first(value, lambda ch: not (ch.isascii() and (ch.isalnum() or ch in ".-")))
        return (f"contains {describe_char(bad)}" if bad is not None
                else "is not a domain name (labels of letters, digits and '-', 1-63 each)")
    return None


# ------------------------------------------------------------------------------ formats


@dataclass(frozen=True)
class Format:
    name: str
    title: str  # "a MariaDB option file (galera.cnf)": the file a message names
    encoding: str  # how the renderer writes a value
    refuses: Callable  # value -> None, or what it contains that the format cannot carry


FORMATS = {f.name: f for f in (
    Format("mariadb-option-file", "a MariaDB option file (galera.cnf)",
           'double-quoted; \\ and " escaped with a backslash', _universal),
    Format("keepalived", "keepalived.conf", 'double-quoted (keepalived has no escapes)', _refusing('"')),
    Format("ldirectord", "ldirectord.cf (ldirectord cuts a line at '#' and turns a tab into spaces)",
           'key="value": ldirectord takes everything up to the last double quote', _refusing("#")),
    Format("ldirectord-receive", "ldirectord.cf's receive= (a Perl regular expression)",
           'receive="value", a regular expression matched against the health page',
           _refusing("#\\^$|?*+()[]{}")),
    Format("slapd", "slapd.conf or cn=config (slapd writes a quoted value back unescaped)",
           "double-quoted", _refusing('"\\')),
    Format("postfix-table", "a Postfix lookup table (ldap:*.cf)", "name = value", _postfix),
    Format("postfix-search-base", "a Postfix LDAP table's search_base (where '%' expands)", "name = value",
           _postfix_search_base),
    Format("dovecot-ldap", "dovecot-ldap.conf.ext", 'double-quoted; \\ and " escaped with a backslash',
           _universal),
    Format("shell", "iRedMail's installer config (a bash file)", "single-quoted; ' as '\"'\"'", _universal),
    Format("named", "named.conf (a zone name)", "a domain name, quoted", _named),
)}


# ---------------------------------------------------------------------------------- DNs

# An RDN value salt-mailha writes as it is: RFC 4514 specials would need a backslash escape,
# which slapd.conf's quoted values cannot carry.
_DN_SPECIALS = ',+"\\<>;='
_DN_ATTR = re.compile(r"^[A-Za-z][A-Za-z0-9-]*$")


def dn_problem(dn):
    """Why ``dn`` cannot be written as it is into slapd.conf, Postfix and Dovecot files, or None."""
    found = _universal(dn)
    if found:
        return found
    for rdn in dn.split(","):
        rdn = rdn.strip(" ")  # blanks around ',' do not matter (slapd drops them)
        attr, sep, value = rdn.partition("=")
        if not sep or not _DN_ATTR.fullmatch(attr):
            return f"has {rdn!r}, which is not attribute=value (e.g. dc=example,dc=net)"
        if not value or value != value.strip(" "):
            return f"has an empty value or blanks around '=' in {rdn!r}"
        c = _first(value, lambda ch: ch in _DN_SPECIALS)
        if c is not None:
            return (f"contains {describe_char(c)} in a value, which a DN holds only escaped (RFC 4514); "
                    f"salt-mailha writes DNs unescaped")
        if value.startswith("#"):
            return f"has a value starting with '#' in {rdn!r}, which a DN holds only escaped"
    return None


# -------------------------------------------------------------------------------- routes


@dataclass(frozen=True)
class Route:
    key: str  # the pillar key
    value: object  # str or Secret
    formats: tuple  # names in FORMATS
    secret: bool = False
    dn: bool = False


def _text(value):
    return value.reveal() if hasattr(value, "reveal") else value


def routes(site):  # noqa: C901 - one flat table reads best
    """Every pillar value of ``site`` that a renderer writes, with the formats it reaches."""
    out = []

    def add(key, value, formats, secret=False, dn=False):
        if value is not None and _text(value) is not None:
            out.append(Route(key, value, tuple(formats), secret, dn))

    ka = site.keepalived
    if ka is not None:
        add("mailha:keepalived:auth_pass", ka.auth_pass, ("keepalived",), secret=True)
    g = site.galera
    if g is not None:
        add("mailha:galera:sst_user", g.sst_user, ("mariadb-option-file",))
        add("mailha:galera:sst_password", g.sst_password, ("mariadb-option-file",), secret=True)
        add("mailha:galera:cluster_name", g.cluster_name, ("mariadb-option-file",))
        if g.monitor is not None:
            add("mailha:galera:monitor:user", g.monitor.user, ("ldirectord",))
            add("mailha:galera:monitor:password", g.monitor.password, ("ldirectord",), secret=True)
    add("mailha:ldirectord:health_content", site.ldirectord.health_content, ("ldirectord-receive",))
    lds = site.ldap
    mail = site.mail
    own_lookup = mail is not None and mail.lookup.bind_dn is not None
    iredmail = mail is not None and mail.iredmail is not None
    if lds is not None:
        repl = lds.replication
        as_root = repl is not None and repl.credentials is lds.rootpw
        add("mailha:ldap:suffix", lds.suffix,
            ("slapd", "postfix-search-base", "dovecot-ldap", *(("shell",) if iredmail else ())), dn=True)
        add("mailha:ldap:rootdn", lds.rootdn,
            ("slapd", *(() if own_lookup else ("postfix-table", "dovecot-ldap"))), dn=True)
        add("mailha:ldap:rootpw", lds.rootpw,
            (*(("slapd",) if as_root else ()), *(() if own_lookup else ("postfix-table", "dovecot-ldap")),
             *(("shell",) if iredmail else ())), secret=True)
        if repl is not None:
            add("mailha:ldap:replication:binddn", repl.binddn, ("slapd",), dn=True)
            add("mailha:ldap:replication:searchbase", repl.searchbase, ("slapd",), dn=True)
            if not as_root:
                add("mailha:ldap:replication:credentials", repl.credentials, ("slapd",), secret=True)
    if mail is not None:
        lk = mail.lookup
        add("mailha:mail:lookup:bind_dn", lk.bind_dn, ("postfix-table", "dovecot-ldap"), dn=True)
        add("mailha:mail:lookup:bind_password", lk.bind_password,
            ("postfix-table", "dovecot-ldap", *(("shell",) if iredmail else ())), secret=True)
        if iredmail:
            add("mailha:mail:iredmail:admin_password", mail.iredmail.admin_password, ("shell",), secret=True)
            add("mailha:mail:iredmail:postmaster_password", mail.iredmail.postmaster_password, ("shell",),
                secret=True)
    d = site.dns
    if d is not None:
        add("mailha:dns:zone", d.zone, ("named",))
        if d.tsig is not None:
            add("mailha:dns:tsig:name", d.tsig.name, ("named",))
    return out


def _fix(route):
    if route.secret:
        return "choose a password without it (value not shown)"
    if route.dn:
        return "write the DN without it"
    return "choose a value without it"


def value_problems(route):
    """``[(key, message)]``: what of ``route.value`` its formats (and DN syntax) cannot carry."""
    text = _text(route.value)
    if not isinstance(text, str):
        return []
    if route.dn:
        why = dn_problem(text)
        if why:
            return [(route.key, f"{why}: {_fix(route)}")]
    for name in route.formats:
        f = FORMATS[name]
        why = f.refuses(text)
        if why:
            return [(route.key, f"{why}, which {f.title} cannot carry: {_fix(route)}")]
    return []


def site_problems(site):
    """``[(pillar key, message)]`` for every value of ``site`` that one of the formats it reaches
    cannot carry, and what the states would otherwise refuse only once files are written: the
    health page outside the web root, a suffix whose entry the native path cannot create."""
    problems = []
    for route in routes(site):
        problems += value_problems(route)
    keys = {k for k, _ in problems}
    page = site.ldirectord.health_page
    if site.mail is not None and page and (not page.lstrip("/") or ".." in page.lstrip("/").split("/")):
        problems.append(("mailha:ldirectord:health_page", f"{page!r} leaves mail:web_root, where the mail nodes "
                                                          f"write it: give a file name under it, e.g. ldirectord.txt"))
    lds, mail = site.ldap, site.mail
    native = mail is not None and mail.iredmail is None and site.nodes_with("mail")
    if native and lds is not None and lds.suffix and "mailha:ldap:suffix" not in keys:
        from . import ldap  # ldap imports this module

        try:
            ldap.base_entry(lds.suffix)  # the suffix entry mailha_ldap creates on the native path
        except ValidationError as exc:
            problems += exc.problems
    return problems


# ----------------------------------------------------------------------------- encoders


def mariadb_quote(value):
    """A MariaDB option-file value that my_print_defaults / mariadbd read back as ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def keepalived_quote(value):
    """A keepalived.conf string (``site_problems`` has refused a double quote)."""
    return f'"{value}"'


def slapd_quote(value):
    """A slapd.conf / olcSyncrepl quoted value (``site_problems`` has refused ``"`` and ``\\``)."""
    return f'"{value}"'


def dovecot_quote(value):
    """A dovecot-ldap.conf.ext value that Dovecot's settings reader reads back as ``value``."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def shell_quote(value):
    """One single-quoted bash word."""
    return "'" + value.replace("'", "'\"'\"'") + "'"
