"""Outbound requests to URLs that users control (webhook_url, custom tool urls, a custom LLM api_url).

A user who can make the worker fetch any URL can reach what only the worker should see: cloud metadata
(169.254.169.254), the Temporal frontend, databases on the private network. So every such request goes
through `GuardedTransport`: it resolves the host itself, refuses any address that is not globally
routable (loopback, private, link-local, shared/CGNAT, multicast, reserved, IPv4-mapped forms of them),
and connects to the address it checked, so a DNS answer that changes between the check and the connect
(DNS rebinding) cannot slip through. TLS still verifies the certificate against the original hostname.

`allow_private=True` (OUTDIAL_ALLOW_PRIVATE_URLS=1) lifts the address rule for the dev stack and tests;
the scheme rule (http/https only) always holds.

Use it from other parts (the agent's custom tools) as `guarded_client(allow_private=...)`.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import socket
from types import ModuleType
from typing import Any

import httpx

from models.assistant import SENDABLE_HOST

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UnsafeUrlError(ValueError):
    """The URL may not be fetched: wrong scheme, no host, or it resolves to a non-public address."""


class UnresolvedHost(OSError):
    """The host's name could not be resolved now: a network failure like any other (a DNS server that
    failed once must not stop a webhook for good), retried as one; through a guarded client it is
    the HTTP library's ConnectError."""


def unsafe_reason(address: str) -> str | None:
    """Why `address` (an IP literal) must not be reached, or None when it is a public address."""
    ip: IpAddress = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone id
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = ip.ipv4_mapped or ip.sixtofour or (ip.teredo[1] if ip.teredo else None)
        if embedded is not None:
            return unsafe_reason(str(embedded))
    for label, flag in (
        ("unspecified", ip.is_unspecified),
        ("site-local", getattr(ip, "is_site_local", False)),  # fec0::/10: deprecated, not global
        ("loopback", ip.is_loopback),
        ("link-local (cloud metadata lives here)", ip.is_link_local),
        ("private", ip.is_private),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
    ):
        if flag:
            return label
    if not ip.is_global:  # shared address space 100.64/10 (Alibaba metadata), benchmarking ranges, ...
        return "not globally routable"
    return None


def check_url_syntax(url: str) -> httpx.URL:
    """An absolute http(s) URL with a host, else UnsafeUrlError."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as err:
        raise UnsafeUrlError(f"not a valid URL: {err}") from None
    if parsed.scheme not in ("http", "https"):
        raise UnsafeUrlError(f"scheme {parsed.scheme!r} is not allowed (http or https only)")
    if not parsed.host:
        raise UnsafeUrlError("the URL has no host")
    return parsed


async def resolve_checked(host: str, port: int, *, allow_private: bool) -> list[str]:
    """The host's addresses, every one of them checked; UnsafeUrlError if any is not public."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise UnresolvedHost(f"cannot resolve {host!r}: {err.strerror}") from None
    except UnicodeError:  # a label over 63 characters: no retry will resolve it
        raise UnsafeUrlError(f"{host!r} is not a host name DNS can look up") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses:
        raise UnsafeUrlError(f"{host!r} has no address")
    if not allow_private:
        for address in addresses:
            if reason := unsafe_reason(address):
                raise UnsafeUrlError(
                    f"{host!r} resolves to {address}, a {reason} address; outbound URLs must be public "
                    "(set OUTDIAL_ALLOW_PRIVATE_URLS=1 only for local development)"
                )
    return addresses


async def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse `url` before any request is made (a clear, early error for configuration mistakes)."""
    parsed = check_url_syntax(url)
    host = parsed.raw_host.decode("ascii", "replace")  # as sent (IDNA 2008), as the transport resolves it
    await resolve_checked(host, parsed.port or _default_port(parsed), allow_private=allow_private)


def describe_url(url: str) -> str:
    """The URL without path, query or credentials: safe to log (a webhook path often holds a token)."""
    try:
        parsed = httpx.URL(url)
        return f"{parsed.scheme}://{parsed.host}{f':{parsed.port}' if parsed.port else ''}/…"
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"


def _default_port(url: httpx.URL) -> int:
    return 443 if url.scheme == "https" else 80


@functools.cache
def _guarded_transport_class(http: ModuleType) -> type[Any]:
    """The transport for one HTTP library: httpx (webhooks, SMS) or httpx2 (the openai client)."""

    class GuardedTransport(http.AsyncBaseTransport):  # type: ignore[name-defined,misc]
        """Checks and pins the resolved address of every request (redirect hops too).

        One inner connection pool per original host, so a TLS connection made for one hostname is
        never reused for another that happens to share its address.
        """

        def __init__(self, *, allow_private: bool, **transport_options: Any) -> None:
            self.allow_private = allow_private
            self._options = transport_options
            self._pools: dict[tuple[str, str, int], Any] = {}

        async def handle_async_request(self, request: Any) -> Any:
            url = request.url
            if not url.host:  # `http:/host/hook`, `http:host`: a slash short of one
                raise UnsafeUrlError("it has no host: an http(s) URL's follows `//`")
            if not SENDABLE_HOST.fullmatch(url.raw_host.decode("ascii", "replace")):  # `host\\hook`
                raise UnsafeUrlError("its host is no host name (a backslash, a space?)")
            if url.scheme not in ("http", "https"):
                raise UnsafeUrlError(f"scheme {url.scheme!r} is not allowed (http or https only)")
            port = url.port or (443 if url.scheme == "https" else 80)
            # The name as sent (IDNA 2008: `faß.de` is xn--fa-hia.de), not httpx's Unicode `host`, which
            # the resolver and TLS encode by the older rules: `fass.de`, another domain.
            host = url.raw_host.decode("ascii")
            try:
                addresses = await resolve_checked(host, port, allow_private=self.allow_private)
            except UnresolvedHost as err:
                raise http.ConnectError(str(err), request=request) from err
            key = (url.scheme, host, port)
            pool = self._pools.get(key)
            if pool is None:
                pool = self._pools[key] = http.AsyncHTTPTransport(**self._options)
            if url.scheme == "https":  # SNI and certificate checks use the original name
                request.extensions = {**request.extensions, "sni_hostname": host}
            for address in addresses[:-1]:  # each checked address in turn, as a client connecting by name
                request.url = url.copy_with(host=address)  # the Host header keeps the original name
                with contextlib.suppress(
                    http.ConnectError, http.ConnectTimeout
                ):  # nothing sent: the next one
                    return await pool.handle_async_request(request)
            request.url = url.copy_with(host=addresses[-1])
            return await pool.handle_async_request(request)

        async def aclose(self) -> None:
            for pool in self._pools.values():
                await pool.aclose()
            self._pools.clear()

    GuardedTransport.__qualname__ = f"GuardedTransport[{http.__name__}]"
    return GuardedTransport


GuardedTransport = _guarded_transport_class(httpx)
"""For httpx clients (webhooks, SMS providers, custom tools)."""


def guarded_client(*, allow_private: bool, **client_options: Any) -> httpx.AsyncClient:
    """An httpx client for user-controlled URLs. Redirects are off unless asked for (each hop is checked)."""
    client_options.setdefault("follow_redirects", False)
    return httpx.AsyncClient(transport=GuardedTransport(allow_private=allow_private), **client_options)


def guarded_httpx2_client(*, allow_private: bool, **client_options: Any) -> Any:
    """The same for httpx2, the HTTP library of the `openai` client (pass it as `http_client=`)."""
    import httpx2

    client_options.setdefault("follow_redirects", False)
    transport = _guarded_transport_class(httpx2)(allow_private=allow_private)
    return httpx2.AsyncClient(transport=transport, **client_options)
