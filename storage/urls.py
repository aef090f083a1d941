"""Server addresses as they may be shown: without the secrets some of them carry."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit


def redact_url(url: str) -> str:
    """``url`` with any password (or token) in it replaced, for logs and messages; each of a comma-separated list
    of URLs (a NATS cluster's servers)."""
    if "," in url:
        return ",".join(redact_url(part) for part in url.split(","))
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    userinfo, _, host = parts.netloc.rpartition("@")
    user = userinfo.partition(":")[0] if ":" in userinfo else ""
    return urlunsplit(parts._replace(netloc=f"{user + ':' if user else ''}***@{host}"))
