"""Re-capture the real slapd output in this folder (run as root; needs Debian's slapd):

    .venv/bin/python tests/unit/data/ldap/capture.py

A mirror pair (slapd.conf form) configured by the mailha.ldap state; ``ldapsearch`` output of
contextCSN before mirror mode, in agreement, and with mail2 down while mail1 took writes;
cn=config's olcSyncrepl as slapd returns it, and as ``slaptest -F`` converts our slapd.conf block
(both hold only the example's placeholder password). tests/unit/test_ldap.py pins values from
these files (CSNs, the lag between them): update those asserts after a re-capture.
"""
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))

from salt_mailha.core import ldap as core_ldap  # noqa: E402
from tests.integration.ldap.fixtures import MirrorPair  # noqa: E402
from tests.support.slapd import SLAPADD, SLAPTEST, iredmail_like_conf  # noqa: E402
from tests.unit.test_ldap import site_from  # noqa: E402

HERE = pathlib.Path(__file__).resolve().parent


def ldapsearch(pair, node, *extra):
    s = pair.slapd[node]
    argv = ["ldapsearch", "-x", "-LLL", "-o", "ldif-wrap=no", "-H", s.url, "-D", pair.rootdn, "-y", "/dev/stdin",
            "-b", pair.suffix, "-s", "base", *extra, "contextCSN"]
    return subprocess.run(argv, input=pair.rootpw, capture_output=True, text=True, check=True).stdout


def main():
    with tempfile.TemporaryDirectory() as tmp:
        pair = MirrorPair.build(pathlib.Path(tmp) / "conf", "slapd.conf")
        try:
            pair.start()
            pair.seed("mail1")
            (HERE / "contextcsn-before-mirrormode.ldif").write_text(ldapsearch(pair, "mail1"))
            pair.configure()
            for s in pair.slapd.values():
                s.wait_ready()
            pair.wait_has("mail1", pair.add_person("mail2", "bob"))
            pair.wait_has("mail2", pair.add_person("mail1", "alice"))
            for n in ("mail1", "mail2"):
                (HERE / f"contextcsn-agree-{n}.ldif").write_text(ldapsearch(pair, n))
            pair.slapd["mail2"].kill9()
            for i in range(3):
                pair.add_person("mail1", f"while-down-{i}")
            (HERE / "contextcsn-mail2-down-mail1.ldif").write_text(ldapsearch(pair, "mail1"))
        finally:
            pair.stop()
        pair = MirrorPair.build(pathlib.Path(tmp) / "cn", "cn=config")
        try:
            pair.start()
            pair.seed("mail1")
            pair.configure()
            s = pair.slapd["mail1"]
            out = subprocess.run(["ldapsearch", "-Q", "-LLL", "-o", "ldif-wrap=no", "-Y", "EXTERNAL", "-H",
                                  s.ldapi_url, "-b", "cn=config", "(olcSuffix=*)", "olcSyncrepl",
                                  "olcMultiProvider", "olcDbIndex"],
                                 capture_output=True, text=True, check=True).stdout
            (HERE / "cnconfig-database-readback.ldif").write_text(out.replace(str(s.dir), "/srv/slapd"))
        finally:
            pair.stop()
        converted(pathlib.Path(tmp) / "convert")


def converted(work):
    """The example site's block merged into the iRedMail-like slapd.conf, converted by slaptest."""
    (work / "db").mkdir(parents=True)
    (work / "slapd.d").mkdir()
    conf = work / "slapd.conf"
    conf.write_text(core_ldap.merge_slapd_conf(
        iredmail_like_conf(work, "dc=example,dc=net", "cn=Manager,dc=example,dc=net", "pw"), site_from()))
    subprocess.run([SLAPADD, "-f", str(conf), "-b", "dc=example,dc=net", "-l", "/dev/null"], check=True,
                   capture_output=True)
    subprocess.run([SLAPTEST, "-Q", "-f", str(conf), "-F", str(work / "slapd.d")], check=True, capture_output=True)
    db = (work / "slapd.d" / "cn=config" / "olcDatabase={2}mdb.ldif").read_text().splitlines()
    keep, out = False, ["dn: olcDatabase={2}mdb,cn=config"]
    for line in db:
        if not line.startswith(" "):
            keep = line.split(":")[0] in ("olcSyncrepl", "olcMultiProvider", "olcDbIndex")
        if keep:
            out.append(line)
    top = (work / "slapd.d" / "cn=config.ldif").read_text().splitlines()
    out += [line for line in top if line.startswith("olcServerID")]
    (HERE / "cnconfig-converted-by-slaptest.ldif").write_text("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
