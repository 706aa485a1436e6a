"""The library's version, sent in ``context.library`` and the User-Agent."""

VERSION = "3.0.0"
