"""A tiny document model rendered to both Markdown and standalone HTML (no extra dependency).

Reports are built as a list of blocks (headings, paragraphs, tables, images, code) so that the
Markdown and the HTML always say the same thing.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

from glioseg.data.io import write_text_atomic


@dataclass
class Document:
    title: str
    blocks: list[tuple[str, object]] = field(default_factory=list)

    def heading(self, text: str, level: int = 2) -> Document:
        self.blocks.append(("heading", (level, text)))
        return self

    def paragraph(self, text: str) -> Document:
        self.blocks.append(("paragraph", text))
        return self

    def bullets(self, items: list[str]) -> Document:
        self.blocks.append(("bullets", list(items)))
        return self

    def table(self, header: list[str], rows: list[list[str]]) -> Document:
        self.blocks.append(("table", (header, rows)))
        return self

    def image(self, path: str, caption: str) -> Document:
        self.blocks.append(("image", (path, caption)))
        return self

    def code(self, text: str) -> Document:
        self.blocks.append(("code", text))
        return self

    # ------------------------------------------------------------------ rendering
    def markdown(self) -> str:
        out = [f"# {self.title}", ""]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                out += ["#" * level + " " + text, ""]
            elif kind == "paragraph":
                out += [value, ""]
            elif kind == "bullets":
                out += [f"- {item}" for item in value] + [""]
            elif kind == "table":
                header, rows = value
                out.append("| " + " | ".join(header) + " |")
                out.append("|" + "|".join(" --- " for _ in header) + "|")
                out += ["| " + " | ".join(row) + " |" for row in rows]
                out.append("")
            elif kind == "image":
                path, caption = value
                out += [f"![{caption}]({path})", "", f"*{caption}*", ""]
            elif kind == "code":
                out += ["```", value.rstrip("\n"), "```", ""]
        return "\n".join(out)

    def html(self) -> str:
        esc = html.escape
        body = [f"<h1>{esc(self.title)}</h1>"]
        for kind, value in self.blocks:
            if kind == "heading":
                level, text = value
                body.append(f"<h{level}>{esc(text)}</h{level}>")
            elif kind == "paragraph":
                body.append(f"<p>{_inline(value)}</p>")
            elif kind == "bullets":
                body.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in value) + "</ul>")
            elif kind == "table":
                header, rows = value
                head = "".join(f"<th>{_inline(h)}</th>" for h in header)
                rows_html = "".join(
                    "<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in row) + "</tr>" for row in rows
                )
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows_html}</tbody></table>")
            elif kind == "image":
                path, caption = value
                body.append(
                    f'<figure><img src="{esc(path)}" alt="{esc(caption)}"><figcaption>{esc(caption)}</figcaption></figure>'
                )
            elif kind == "code":
                body.append(f"<pre><code>{esc(value)}</code></pre>")
        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
            "td:first-child,th:first-child{text-align:left}img{max-width:100%}pre{background:#f4f4f4;padding:1em;"
            "overflow-x:auto}figure{margin:1em 0}figcaption{color:#555;font-size:90%}"
        )
        return (
            f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(self.title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
        )

    def write(self, markdown_path: Path, html_path: Path) -> None:
        write_text_atomic(markdown_path, self.markdown())
        write_text_atomic(html_path, self.html())


def _inline(text: str) -> str:
    """HTML for a line that may contain **bold** and `code` Markdown."""
    import re

    out = html.escape(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", out)
    out = re.sub(r"`(.+?)`", r"<code>\1</code>", out)
    return out
