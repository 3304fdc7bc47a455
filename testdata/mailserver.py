#!/usr/bin/env python3
"""A small mail server for the recording lab: SMTP (25, 587), IMAP (143) and POP3 (110), each
offering STARTTLS and, after the upgrade, answering the client's first command and closing.
Enough of each protocol for curl and `openssl s_client -starttls` to negotiate TLS.

Usage: mailserver.py CERT KEY ADDRESS...
"""
import socket
import socketserver
import ssl
import sys
import threading

CERT, KEY = sys.argv[1], sys.argv[2]
CTX = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
CTX.load_cert_chain(CERT, KEY)


class Mail(socketserver.StreamRequestHandler):
    timeout = 20

    def send(self, text):
        self.wfile.write(text.encode() + b"\r\n")
        self.wfile.flush()

    def lines(self):
        while True:
            line = self.rfile.readline(1024)
            if not line:
                return
            yield line.decode("ascii", "replace").rstrip("\r\n")

    def upgrade(self):
        conn = CTX.wrap_socket(self.request, server_side=True)
        self.rfile = conn.makefile("rb")
        self.wfile = conn.makefile("wb")
        return conn

    def handle(self):
        port = self.server.server_address[1]
        try:
            {25: self.smtp, 587: self.smtp, 143: self.imap, 110: self.pop3}[port]()
        except (OSError, ssl.SSLError):
            pass

    def smtp(self):
        self.send("220 mail.lab ESMTP")
        for line in self.lines():
            verb = line.split(" ")[0].upper()
            if verb in ("EHLO", "HELO"):
                self.send("250-mail.lab\r\n250-PIPELINING\r\n250 STARTTLS")
            elif verb == "STARTTLS":
                self.send("220 2.0.0 Ready to start TLS")
                self.upgrade()
                for line in self.lines():
                    verb = line.split(" ")[0].upper()
                    if verb == "QUIT":
                        self.send("221 2.0.0 Bye")
                        return
                    if verb in ("EHLO", "HELO"):
                        self.send("250-mail.lab\r\n250 AUTH PLAIN")
                    elif verb == "MAIL":
                        self.send("250 2.1.0 Ok")
                    else:
                        self.send("502 5.5.2 Not here")
                return
            elif verb == "QUIT":
                self.send("221 2.0.0 Bye")
                return
            else:
                self.send("502 5.5.2 Not here")

    def imap(self):
        self.send("* OK [CAPABILITY IMAP4rev1 STARTTLS] mail.lab ready")
        for line in self.lines():
            tag, _, cmd = line.partition(" ")
            cmd = cmd.upper()
            if cmd == "CAPABILITY":
                self.send("* CAPABILITY IMAP4rev1 STARTTLS LOGINDISABLED")
                self.send(f"{tag} OK CAPABILITY completed")
            elif cmd == "STARTTLS":
                self.send(f"{tag} OK Begin TLS negotiation now")
                self.upgrade()
                for line in self.lines():
                    tag, _, cmd = line.partition(" ")
                    if cmd.upper() == "LOGOUT":
                        self.send("* BYE")
                        self.send(f"{tag} OK LOGOUT completed")
                        return
                    self.send(f"{tag} BAD Not here")
                return
            else:
                self.send(f"{tag} BAD Not here")

    def pop3(self):
        self.send("+OK mail.lab POP3 ready")
        for line in self.lines():
            cmd = line.upper()
            if cmd == "CAPA":
                self.send("+OK\r\nSTLS\r\nUSER\r\n.")
            elif cmd == "STLS":
                self.send("+OK Begin TLS negotiation")
                self.upgrade()
                for line in self.lines():
                    if line.upper() == "QUIT":
                        self.send("+OK Bye")
                        return
                    self.send("-ERR Not here")
                return
            else:
                self.send("-ERR Not here")


class Server(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True


class Server6(Server):
    address_family = socket.AF_INET6


def main():
    servers = []
    for addr in sys.argv[3:]:
        for port in (25, 587, 143, 110):
            cls = Server6 if ":" in addr else Server
            s = cls((addr, port), Mail)
            servers.append(s)
            threading.Thread(target=s.serve_forever, daemon=True).start()
    threading.Event().wait()


if __name__ == "__main__":
    main()
