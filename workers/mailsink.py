"""A local SMTP sink for the dev stack: outcome emails land in `.outdial/mail/*.eml` and are announced,
so the demo shows them without any mail account. Never for production: it accepts any mail.

    python -m workers.mailsink [--port 1025]     # or started by the dev stack (start_mail_sink)
"""

from __future__ import annotations

import argparse
import asyncio
import email
import email.policy
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

log = logging.getLogger(__name__)

DEFAULT_PORT = 1025
DEFAULT_MAILDIR = ".outdial/mail"


class MailSink:
    """aiosmtpd handler: keeps every message (in `messages` and as a file), calls `on_message`."""

    def __init__(
        self,
        maildir: str | Path | None = None,
        on_message: Callable[[email.message.EmailMessage], Any] | None = None,
    ) -> None:
        self.maildir = Path(maildir) if maildir else None
        self.messages: list[email.message.EmailMessage] = []
        self.recipients: list[list[str]] = []  # each message's envelope (RCPT TO), in order
        self.on_message = on_message

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        raw = envelope.original_content or b""
        message = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(message, email.message.EmailMessage)
        self.messages.append(message)
        self.recipients.append(list(envelope.rcpt_tos))
        if self.maildir:
            self.maildir.mkdir(parents=True, exist_ok=True)
            name = (
                re.sub(r"[^A-Za-z0-9_.-]", "_", str(message.get("Message-ID", "")).strip("<>")) or "message"
            )
            (self.maildir / f"{len(self.messages):04d}-{name}.eml").write_bytes(raw)
        if self.on_message:
            self.on_message(message)
        return "250 Message accepted for delivery"


async def start_mail_sink(
    sink: MailSink, *, host: str = "127.0.0.1", port: int = DEFAULT_PORT
) -> asyncio.base_events.Server:
    """Serve `sink` in the running loop; port 0 picks a free port (see `server.sockets`)."""
    loop = asyncio.get_running_loop()
    return await loop.create_server(lambda: SMTP(sink, hostname="outdial-mailsink"), host, port)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m workers.mailsink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT)
    parser.add_argument("--maildir", default=DEFAULT_MAILDIR)
    args = parser.parse_args()

    def announce(message: email.message.EmailMessage) -> None:
        print(f"mail to {message['To']}: {message['Subject']}", flush=True)

    async def run() -> None:
        server = await start_mail_sink(MailSink(args.maildir, announce), host=args.host, port=args.port)
        print(f"SMTP sink on {args.host}:{args.port}, mail kept in {args.maildir}", flush=True)
        async with server:
            await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
