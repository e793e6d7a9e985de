"""Re-capture the real slapd output in this folder (run as root; needs Debian's slapd):

    .venv/bin/python tests/unit/data/ldap/capture.py

A mirror pair (slapd.conf form) configured by the mailha.ldap state; ``ldapsearch`` output of
contextCSN before mirror mode, in agreement, and with mail2 down while mail1 took writes;
cn=config's olcSyncrepl as slapd returns it (it holds only the example's placeholder password).
"""
import pathlib
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[4]))

from tests.integration.ldap.fixtures import MirrorPair  # noqa: E402

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


if __name__ == "__main__":
    main()
