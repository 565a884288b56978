"""A real SMTP server for natter's email tests: aiosmtpd on loopback with STARTTLS (a test certificate) and AUTH.

Usage: smtp_server.py DIR PORT CERT KEY USER PASSWORD
       smtp_server.py DIR PORT        (plain SMTP without TLS or AUTH, for natter's smtp_security = "none")

Every message that reaches DATA is parsed with Python's `email` package and written to DIR as JSON:
`mail-N.json` when accepted, `refused-N.json` when the file DIR/mode holds an SMTP code to answer instead (e.g. 451
or 550). Prints "listening PORT" once ready, and stops when its standard input closes.
"""

import asyncio
import email
import email.policy
import json
import os
import ssl
import sys
import threading
import warnings

# aiosmtpd warns about its own use of a deprecated attribute on every login.
warnings.filterwarnings("ignore", message="Session.login_data")

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


def main():
    directory, port = sys.argv[1:3]
    cert, key, user, password = (sys.argv[3:7] + [None] * 4)[:4]
    counter = {"n": 0}
    lock = threading.Lock()

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        # handled=False: aiosmtpd answers a failure with 535 itself.
        return AuthResult(success=ok, handled=False)

    class Handler:
        async def handle_DATA(self, server, session, envelope):
            message = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
            text = message.get_body(preferencelist=("plain",))
            html = message.get_body(preferencelist=("html",))
            record = {
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "tls": session.ssl is not None,
                "authenticated": bool(session.authenticated),
                "headers": {name.lower(): str(value) for name, value in message.items()},
                "text": text.get_content() if text is not None else None,
                "html": html.get_content() if html is not None else None,
                "images": [part.get_content_type() for part in message.walk() if part.get_content_maintype() == "image"],
            }
            mode_path = os.path.join(directory, "mode")
            mode = open(mode_path).read().strip() if os.path.exists(mode_path) else "250"
            with lock:
                counter["n"] += 1
                n = counter["n"]
            kind = "mail" if mode == "250" else "refused"
            record["answer"] = mode
            path = os.path.join(directory, f"{kind}-{n}.json")
            with open(path + ".tmp", "w") as file:
                json.dump(record, file)
            os.rename(path + ".tmp", path)
            if mode == "250":
                return "250 OK queued"
            return f"{mode} test server says no"

    secure = {}
    if cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        secure = dict(
            tls_context=context,
            require_starttls=True,
            authenticator=authenticator,
            auth_required=True,
            auth_require_tls=True,
        )
    controller = Controller(Handler(), hostname="127.0.0.1", port=int(port), server_hostname="localhost", **secure)
    controller.start()
    print(f"listening {controller.port}", flush=True)
    sys.stdin.read()
    controller.stop()


if __name__ == "__main__":
    main()
