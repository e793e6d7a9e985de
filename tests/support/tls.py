"""Test certificates made the way Debian makes its snakeoil pair (ssl-cert's make-ssl-cert
generate-default-snakeoil: ``openssl req -x509`` with /usr/share/ssl-cert/ssleay.cnf), so a test
sees what the lab's mail nodes serve: self-signed, ``CA:FALSE``, a DNS name that is not the
address the balancer connects to."""
import http.server
import shutil
import ssl
import subprocess
import threading
from pathlib import Path

OPENSSL = shutil.which("openssl") or "/usr/bin/openssl"

# ssl-cert 1.1.2's ssleay.cnf with make-ssl-cert's substitutions (@HostName@, @SubjectAltName@)
SSLEAY_CNF = """\
[ req ]
default_bits            = 2048
default_keyfile         = privkey.pem
distinguished_name      = req_distinguished_name
prompt                  = no
policy                  = policy_anything
req_extensions          = v3_req
x509_extensions         = v3_req

[ req_distinguished_name ]
commonName                      = {host}

[ v3_req ]
basicConstraints        = CA:FALSE
subjectAltName          = DNS:{host}
"""


def snakeoil(directory, host="vm", name="ssl-cert-snakeoil"):
    """``(cert, key)`` paths of a fresh snakeoil-style pair in ``directory``."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    cnf, cert, key = d / f"{name}.cnf", d / f"{name}.pem", d / f"{name}.key"
    cnf.write_text(SSLEAY_CNF.format(host=host))
    subprocess.run([OPENSSL, "req", "-config", str(cnf), "-new", "-x509", "-days", "2", "-nodes", "-sha256",
                    "-out", str(cert), "-keyout", str(key)], check=True, capture_output=True, timeout=60)
    key.chmod(0o600)
    return cert, key


class HttpsServer:
    """A real TLS server on 127.0.0.1 (Python's ssl + http.server) serving ``pages`` {path: body};
    other paths get 404."""

    def __init__(self, cert, key, pages):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                body = pages.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.end_headers()
                self.wfile.write((body or "not found\n").encode())

            def log_message(self, *args):
                pass

        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(str(cert), str(key))
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.socket = ctx.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
