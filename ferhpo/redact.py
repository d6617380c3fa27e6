"""Storage passwords never leave a process: the one redaction function, and the way
worker and trial processes receive the real URL.

A storage URL is shown and written as ``scheme://user:***@host/db`` everywhere: on the
terminal, in logs, reports, model cards, status, TensorBoard folder names, error
messages (a database driver's own text may quote the URL) and every file under
`studies/`, which users commit and share. The processes a search starts get the real
URL through their environment (`STORAGE_ENV`), never through a file.

Standard library only: every layer may import it, the report included.
"""

from __future__ import annotations

import os
import re

#: The environment variable that carries the real storage URL to child processes (the
#: same one users set for their default storage: the child's storage is the search's).
STORAGE_ENV = "FERHPO_STORAGE"

MASK = "***"

# scheme://user:password@ — the password runs to the last "@" before the next blank or
# quote, so an unencoded "@" or "/" inside it is masked too.
_CREDENTIALS = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^:/@\s'\"`]*):(?P<password>[^\s'\"`]*)@")


def redact(text: str | None) -> str | None:
    """`text` (a URL, a message, a whole log) with every URL's password masked; None stays None.

    ``redact("postgresql://ann:s3cret@db:5432/ferhpo")`` gives
    ``"postgresql://ann:***@db:5432/ferhpo"``; a URL without a password is unchanged.
    """
    if text is None:
        return None
    return _CREDENTIALS.sub(lambda m: f"{m['head']}:{MASK}@", text)


def real_url(shown: str) -> str:
    """The real URL of a storage that a parent process wrote down redacted: the one in
    `STORAGE_ENV` when it redacts to `shown`, else `shown` itself."""
    given = os.environ.get(STORAGE_ENV)
    if given and redact(given) == shown:
        return given
    return shown


def child_env(url: str | None, env: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of a child process that opens the storage at `url`."""
    out = dict(os.environ if env is None else env)
    if url:
        out[STORAGE_ENV] = url
    return out
