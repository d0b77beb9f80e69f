#!/usr/bin/env python3
"""A read-only git server over HTTPS for tests/git_remotes.rs.

Serves the bare repositories below --root through `git http-backend` (as a
CGI program) over TLS with the given certificate, and requires HTTP Basic
authentication whose password is --token (any user name). Binds 127.0.0.1
on a free port and prints `PORT <n>` on stdout once it accepts connections.
Exits when its standard input closes, so a test that dies does not leave it
running. Standard library only.
"""

import argparse
import base64
import hmac
import http.server
import os
import ssl
import subprocess
import sys
import threading


def read_body(handler):
    """The request body, de-chunked when sent with chunked encoding."""
    if handler.headers.get("Transfer-Encoding", "").lower() == "chunked":
        parts = []
        while True:
            size_line = handler.rfile.readline(1024)
            size = int(size_line.split(b";")[0].strip() or b"0", 16)
            if size == 0:
                # Trailers, up to the empty line.
                while handler.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(parts)
            parts.append(handler.rfile.read(size))
            handler.rfile.readline(16)
    length = int(handler.headers.get("Content-Length") or 0)
    return handler.rfile.read(length) if length else b""


class GitHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "reconcile-test-git/1"

    def log_message(self, fmt, *args):
        sys.stderr.write("git-https: %s %s\n" % (self.address_string(), fmt % args))

    def authorised(self):
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            decoded = base64.b64decode(header[6:], validate=True).decode()
        except ValueError:
            return False
        _user, _, password = decoded.partition(":")
        return hmac.compare_digest(password.encode(), self.server.token.encode())

    def reply(self, status, reason, headers, body):
        self.send_response(status, reason)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def handle_git(self):
        body = read_body(self)
        if not self.authorised():
            self.reply(
                401,
                "Unauthorized",
                [("WWW-Authenticate", 'Basic realm="git"')],
                b"authentication required\n",
            )
            return
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": self.server.root,
            "GIT_HTTP_EXPORT_ALL": "1",
            "GATEWAY_INTERFACE": "CGI/1.1",
            "SERVER_PROTOCOL": "HTTP/1.1",
            "REQUEST_METHOD": self.command,
            "PATH_INFO": path,
            "QUERY_STRING": query,
            "REMOTE_ADDR": self.client_address[0],
            "REMOTE_USER": "test",
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
        }
        if self.headers.get("Content-Encoding"):
            env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
        if self.headers.get("Git-Protocol"):
            env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
        done = subprocess.run(
            ["git", "http-backend"], input=body, env=env, capture_output=True
        )
        if done.stderr:
            sys.stderr.write(done.stderr.decode(errors="replace"))
        head, sep, payload = done.stdout.partition(b"\r\n\r\n")
        if not sep:
            head, sep, payload = done.stdout.partition(b"\n\n")
        status, reason, headers = 200, "OK", []
        for line in head.decode(errors="replace").splitlines():
            name, _, value = line.partition(":")
            value = value.strip()
            if name.lower() == "status":
                code, _, text = value.partition(" ")
                status, reason = int(code), text or "Status"
            elif name:
                headers.append((name, value))
        if done.returncode != 0 and not sep:
            status, reason, headers, payload = 500, "Backend failed", [], b""
        self.reply(status, reason, headers, payload)

    do_GET = handle_git
    do_POST = handle_git


class TlsServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def get_request(self):
        sock, addr = self.socket.accept()
        # The handshake happens in the request's thread, on first use: a
        # client that refuses the certificate only ends its own thread.
        return self.tls.wrap_socket(
            sock, server_side=True, do_handshake_on_connect=False
        ), addr

    def handle_error(self, request, client_address):
        sys.stderr.write(
            "git-https: %s: %s\n" % (client_address[0], sys.exc_info()[1])
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--root", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--token", required=True)
    args = parser.parse_args()

    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(args.cert, args.key)
    server = TlsServer(("127.0.0.1", 0), GitHandler)
    server.tls = tls
    server.root = os.path.abspath(args.root)
    server.token = args.token

    def watch_stdin():
        while sys.stdin.buffer.read(4096):
            pass
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print("PORT %d" % server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
