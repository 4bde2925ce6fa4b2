"""A tiny document model rendered both to Markdown and to self-contained HTML.

Why our own: a report is a handful of headings, paragraphs, tables and images; a
template engine or a Markdown converter would add a dependency for ~80 lines, and
rendering both formats from one tree keeps the Markdown and the HTML identical in content.
"""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass, field
from typing import Union


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""


@dataclass
class Image:
    #: File name of the PNG written beside the report.
    name: str
    png: bytes
    caption: str = ""


Block = Union[Para, Table, Image]


@dataclass
class Section:
    title: str
    id: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> "Section":
        self.blocks.extend(blocks)
        return self


def to_markdown(title: str, sections: list[Section]) -> str:
    out = [f"# {title}", ""]
    for s in sections:
        out += [f"## {s.title}", ""]
        for b in s.blocks:
            if isinstance(b, Para):
                out += [b.text, ""]
            elif isinstance(b, Table):
                if b.caption:
                    out += [f"*{b.caption}*", ""]
                out.append("| " + " | ".join(b.headers) + " |")
                out.append("|" + "|".join("---" for _ in b.headers) + "|")
                out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in b.rows]
                out.append("")
            elif isinstance(b, Image):
                out += [f"![{b.caption}]({b.name})", ""]
                if b.caption:
                    out += [f"*{b.caption}*", ""]
    return "\n".join(out)


_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #444}h2{margin-top:2em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;margin:1em 0;font-size:0.9em}th,td{border:1px solid #bbb;padding:3px 8px;text-align:left}
th{background:#f0f0f0}tr:nth-child(even) td{background:#fafafa}figure{margin:1em 0}img{max-width:100%}
figcaption,caption{font-style:italic;color:#555;text-align:left}nav a{margin-right:1em}
"""

# After loading, the page checks its own images and marks the body; a headless browser
# test reads the mark (``data-report-status``) from the rendered DOM.
_CHECK = """
window.addEventListener('load',function(){var bad=[];
document.querySelectorAll('img').forEach(function(i){if(!i.complete||i.naturalWidth===0){bad.push(i.alt)}});
document.body.setAttribute('data-report-status',bad.length?'broken images: '+bad.join(', '):'ok');
document.body.setAttribute('data-report-images',String(document.images.length));});
window.addEventListener('error',function(e){document.body.setAttribute('data-report-status','error: '+e.message)});
"""


def to_html(title: str, sections: list[Section]) -> str:
    """One self-contained HTML file: CSS inline, images as base64 data URIs, no network."""
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">', f"<title>{e(title)}</title>",
             f"<style>{_CSS}</style>", f"<script>{_CHECK}</script>", '</head><body data-report-status="loading">',
             f"<h1>{e(title)}</h1>", "<nav>" + "".join(f'<a href="#{s.id}">{e(s.title)}</a>' for s in sections) + "</nav>"]
    for s in sections:
        parts.append(f'<section id="{e(s.id)}"><h2>{e(s.title)}</h2>')
        for b in s.blocks:
            if isinstance(b, Para):
                parts.append(f"<p>{_inline(b.text)}</p>")
            elif isinstance(b, Table):
                cap = f"<caption>{_inline(b.caption)}</caption>" if b.caption else ""
                head = "".join(f"<th>{_inline(h)}</th>" for h in b.headers)
                body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in b.rows)
                parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
            elif isinstance(b, Image):
                data = base64.b64encode(b.png).decode()
                parts.append(f'<figure><img alt="{e(b.name)}" src="data:image/png;base64,{data}">'
                             f"<figcaption>{_inline(b.caption)}</figcaption></figure>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _inline(text: str) -> str:
    """Escape, then render **bold** and `code` (the only inline Markdown the report uses)."""
    import re

    t = html.escape(text)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    return re.sub(r"`(.+?)`", r"<code>\1</code>", t)
