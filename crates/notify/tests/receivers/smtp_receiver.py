#!/usr/bin/python3
"""A mail server for perimeter-notify's tests (aiosmtpd), on 127.0.0.1 only.

It listens on a port the kernel picks and prints "PORT <n>" on stdout once
it accepts connections. Each message it takes is stored in --maildir as
<n>.eml (the message as received) and <n>.json (envelope sender and
recipients, whether the session was encrypted, who logged in and how).

--mode says what kind of server it is:
  plain       no TLS, no AUTH
  starttls    STARTTLS required before MAIL (--cert, --key)
  auth        STARTTLS, then AUTH (PLAIN or LOGIN) required (--user, --password)
  auth-login  as auth, offering only AUTH LOGIN
  smtps       TLS from the first byte (implicit TLS)
  refuse5     refuses every recipient with 550
  refuse4     defers every sender with 451
"""

import argparse
import asyncio
import json
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    def __init__(self, args):
        self.args = args
        self.count = 0

    async def handle_MAIL(self, server, session, envelope, address, mail_options):
        if self.args.mode == "refuse4":
            return "451 4.3.0 mailbox busy, try again later"
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.args.mode == "refuse5":
            return "550 5.1.1 no such mailbox\x1b[2J"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        stem = os.path.join(self.args.maildir, str(self.count))
        with open(stem + ".eml", "wb") as eml:
            eml.write(envelope.original_content or envelope.content)
        login = None
        if isinstance(session.auth_data, LoginPassword):
            login = session.auth_data.login.decode("utf-8", "replace")
        facts = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": session.ssl is not None,
            "authenticated": bool(session.authenticated),
            "login": login,
            "mechanism": getattr(server, "perimeter_mechanism", None),
        }
        # The .json is written last: its presence says the message is complete.
        with open(stem + ".json.tmp", "w", encoding="utf-8") as out:
            json.dump(facts, out)
        os.rename(stem + ".json.tmp", stem + ".json")
        return f"250 2.0.0 OK: queued as {self.count}"


def authenticator(args):
    def check(server, session, envelope, mechanism, auth_data):
        server.perimeter_mechanism = mechanism
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == args.user.encode()
            and auth_data.password == args.password.encode()
        )
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    return check


async def serve(args):
    context = None
    if args.cert:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(args.cert, args.key)
    handler = Handler(args)
    mode = args.mode

    def factory():
        if mode == "starttls":
            return SMTP(handler, hostname="mx.test", tls_context=context, require_starttls=True)
        if mode in ("auth", "auth-login"):
            return SMTP(
                handler,
                hostname="mx.test",
                tls_context=context,
                require_starttls=True,
                auth_required=True,
                auth_require_tls=True,
                authenticator=authenticator(args),
                auth_exclude_mechanism=["PLAIN"] if mode == "auth-login" else None,
            )
        return SMTP(handler, hostname="mx.test")

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, "127.0.0.1", 0, ssl=context if mode == "smtps" else None
    )
    print(f"PORT {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--mode", required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user", default="perimeter")
    parser.add_argument("--password", default="")
    args = parser.parse_args()
    asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
