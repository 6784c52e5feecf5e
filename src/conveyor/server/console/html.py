"""HTML built from escaped parts: every value is escaped unless it is already ``Html``.

The console renders on the server with string templates instead of a template engine, so
this module is the one place where escaping happens: ``fmt`` escapes its arguments, ``Html``
marks what is already safe, and the helpers below build on the two.
"""

from __future__ import annotations

import html
import json
import string
import time
from collections.abc import Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import quote, urlencode

MAX_SHOWN = 4000
"""Characters of a body, result or traceback shown before it is cut."""


class Html(str):
    """A string of markup that is safe to insert as it is."""

    __slots__ = ()


def escape(value: object) -> Html:
    """``value`` as text in HTML (attribute values included); ``Html`` passes unchanged."""
    if isinstance(value, Html):
        return value
    return Html(html.escape("" if value is None else str(value), quote=True))


def fmt(template: str, *args: object, **kwargs: object) -> Html:
    """``template.format`` with every argument escaped (the template itself is trusted)."""
    return Html(
        template.format(
            *(escape(arg) for arg in args),
            **{key: escape(value) for key, value in kwargs.items()},
        )
    )


def join(parts: Iterable[object], separator: str = "") -> Html:
    return Html(separator.join(escape(part) for part in parts))


@cache
def _template(name: str) -> string.Template:
    source = resources.files(__package__).joinpath("templates", name).read_text("utf-8")
    return string.Template(source)


def render_template(name: str, **values: Html) -> Html:
    """Fill ``templates/<name>``; values must be ``Html`` (escape them first)."""
    return Html(_template(name).substitute({key: escape(value) for key, value in values.items()}))


# links


def url(path: str, *segments: str, **query: object) -> str:
    """A local URL: ``path`` + each segment quoted + the query (None values left out)."""
    built = path.rstrip("/") + "".join("/" + quote(segment, safe="") for segment in segments)
    params = {key: value for key, value in query.items() if value is not None}
    return (built or "/") + (f"?{urlencode(params)}" if params else "")


def link(href: str, text: object, css: str = "") -> Html:
    if css:
        return fmt('<a href="{}" class="{}">{}</a>', href, css, text)
    return fmt('<a href="{}">{}</a>', href, text)


# tables and lists


def table(
    headers: Iterable[str], rows: Iterable[Iterable[object]], *, empty: str = "Nothing here."
) -> Html:
    """A table; ``Html`` cells are kept, others escaped; numbers are right-aligned (and
    their column's header, going by the first row)."""
    cells = [list(row) for row in rows]
    if not cells:
        return fmt('<p class="empty">{}</p>', empty)
    numeric = [_numeric(cell) for cell in cells[0]]
    head = join(
        _cell("th", header, index < len(numeric) and numeric[index])
        for index, header in enumerate(headers)
    )
    body = join(
        fmt("<tr>{}</tr>", join(_cell("td", cell, _numeric(cell)) for cell in row)) for row in cells
    )
    return fmt("<table><thead><tr>{}</tr></thead><tbody>{}</tbody></table>", head, body)


def _cell(tag: str, value: object, number: bool) -> Html:
    if number:
        return fmt('<{} class="num">{}</{}>', Html(tag), value, Html(tag))
    return fmt("<{}>{}</{}>", Html(tag), value, Html(tag))


def _numeric(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def facts(pairs: Iterable[tuple[str, object]]) -> Html:
    """A definition list of label / value pairs."""
    items = join(fmt("<dt>{}</dt><dd>{}</dd>", label, value) for label, value in pairs)
    return fmt('<dl class="facts">{}</dl>', items)


def badge(text: str, kind: str) -> Html:
    return fmt('<span class="badge {}">{}</span>', kind, text)


def pre(text: object, css: str = "") -> Html:
    return fmt('<pre class="{}">{}</pre>', css, shorten(text))


def shorten(text: object, limit: int = MAX_SHOWN) -> str:
    shown = "" if text is None else str(text)
    if len(shown) <= limit:
        return shown
    return f"{shown[:limit]}… ({len(shown) - limit} more characters)"


def as_json(value: Any) -> str:
    """Pretty JSON for display (anything else as its repr)."""
    try:
        return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=True, default=repr)
    except ValueError:
        return repr(value)


def pager(
    path: str, offset: int, limit: int, total: int, query: Mapping[str, object] | None = None
) -> Html:
    """Previous / next links and where the page is, for offset pagination."""
    if total <= limit and offset == 0:
        return Html("")
    query = dict(query or {})
    shown_to = min(offset + limit, total)
    where = fmt('<span class="where">{} to {} of {}</span>', offset + 1, shown_to, total)
    parts: list[Html] = [where]
    if offset > 0:
        parts.insert(0, link(url(path, **query, offset=max(offset - limit, 0)), "← previous"))
    if offset + limit < total:
        parts.append(link(url(path, **query, offset=offset + limit), "next →"))
    return fmt('<nav class="pager">{}</nav>', join(parts, " "))


# numbers and times


def moment(epoch: float | None) -> Html:
    """A UTC time with its age, in a <time> element."""
    if epoch is None:
        return Html("—")
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(epoch))
    return fmt('<time datetime="{}" title="{} UTC">{}</time>', iso, stamp, age(time.time() - epoch))


def age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ahead = seconds < 0
    seconds = abs(seconds)
    if seconds < 60:
        text = f"{seconds:.0f} s"
    elif seconds < 3600:
        text = f"{seconds / 60:.0f} min"
    elif seconds < 86400:
        text = f"{seconds / 3600:.1f} h"
    else:
        text = f"{seconds / 86400:.1f} d"
    return f"in {text}" if ahead else f"{text} ago"


def duration(seconds: float | None) -> str:
    return "—" if seconds is None else age(-seconds).removeprefix("in ")


def size(count: int) -> str:
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{count} B"  # pragma: no cover


def known(value: object) -> object:
    """A figure as shown: "unknown" where the backend cannot know it (never 0)."""
    return "unknown" if value is None else value


def rate(per_second: float | None) -> str:
    if per_second is None:
        return "—"
    return f"{per_second:.2f}/s" if per_second < 10 else f"{per_second:.0f}/s"


def options_text(options: Mapping[str, Any]) -> str:
    if not options:
        return "defaults"
    return ", ".join(f"{key}={getattr(value, 'value', value)}" for key, value in options.items())
