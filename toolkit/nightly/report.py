"""The nightly report: per image its outcome, old and new build, what changed, every gate with
pass/fail, duration and a log excerpt for failures. Rendered as JSON, Markdown and one HTML page
with no external assets. Pure: building and rendering; writing it lives in ``record``.
"""

from __future__ import annotations

import dataclasses
import html
import json
import re
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

EXCERPT_LINES = 40
_ANSI_RE = re.compile(r"\x1b?\[[0-9;?]*[mKJH]")  # colours systemd prints on a console (ESC may be stripped)
_FAILURE_WORDS = ("FAILED", "Failed", "failed", "error", "Error", "panic", "Traceback")


class Outcome(StrEnum):
    """What a nightly did with an image."""
    NO_CHANGE = "no change"
    PROMOTED = "promoted"  # rebuilt (or reused), every gate passed, on dev and the promotion target
    PUBLISHED = "published"  # every gate passed, on dev; no promotion asked for
    FAILED = "failed"


@dataclass
class Gate:
    """One gate an image passed or failed, and how long it took."""
    name: str  # upstream-check | bake | bake-checks | lab-boot | publish-dev | promote-<ch> | rollout
    passed: bool
    seconds: float
    detail: str = ""
    excerpt: str = ""  # the log or console lines that show why it failed


@dataclass
class ImageReport:
    """One image's nightly: outcome, builds before and after, gates passed."""
    image: str
    outcome: Outcome
    old_build: str | None  # what <image>@dev pointed at before
    new_build: str | None
    reasons: list[str] = field(default_factory=list)
    gates: list[Gate] = field(default_factory=list)
    diff: dict[str, Any] | None = None  # toolkit.image.diff.BuildDiff as a mapping
    published: dict[str, str] = field(default_factory=dict)  # channel -> build
    rollout: dict[str, Any] | None = None
    seconds: float = 0.0

    @property
    def failed_gate(self) -> Gate | None:
        """The first gate that failed, or None."""
        return next((g for g in self.gates if not g.passed), None)


@dataclass
class NightlyReport:
    """A nightly run's report: every image's."""
    run_id: str
    started_at: float
    finished_at: float
    options: dict[str, Any]
    images: list[ImageReport]

    @property
    def failed(self) -> list[ImageReport]:
        """The images that failed."""
        return [i for i in self.images if i.outcome is Outcome.FAILED]

    @property
    def status(self) -> str:
        """"failed" when any image failed, else "succeeded"."""
        return "failed" if self.failed else "succeeded"

    @property
    def exit_code(self) -> int:
        """1 when any image failed, else 0."""
        return 1 if self.failed else 0

    def summary(self) -> str:
        """Images per outcome, in one line."""
        counts: dict[str, int] = {}
        for i in self.images:
            counts[i.outcome.value] = counts.get(i.outcome.value, 0) + 1
        return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no images"


def console_excerpt(text: str, lines: int = EXCERPT_LINES) -> str:
    """The tail of a console or log; failure lines from before the tail are kept above it."""
    plain = _ANSI_RE.sub("", text.replace("\r", ""))
    all_lines = [ln.rstrip() for ln in plain.splitlines() if ln.strip()]
    tail = all_lines[-lines:]
    earlier = [ln for ln in all_lines[:-lines] if any(w in ln for w in _FAILURE_WORDS)][-10:]
    return "\n".join([*earlier, "..."] + tail if earlier else tail)


def to_dict(report: NightlyReport) -> dict[str, Any]:
    """The report as JSON data, with its status and summary."""
    data = dataclasses.asdict(report)
    data["status"] = report.status
    data["summary"] = report.summary()
    for img, src in zip(data["images"], report.images, strict=True):
        fg = src.failed_gate
        img["failed_gate"] = fg.name if fg else None
    return data


def from_dict(data: dict[str, Any]) -> NightlyReport:
    """The report read back from ``to_dict``'s data."""
    images = []
    for i in data.get("images", []):
        i = {k: v for k, v in i.items() if k != "failed_gate"}
        i["outcome"] = Outcome(i["outcome"])
        i["gates"] = [Gate(**g) for g in i.get("gates", [])]
        images.append(ImageReport(**i))
    return NightlyReport(data["run_id"], data["started_at"], data["finished_at"], data.get("options", {}), images)


def to_json(report: NightlyReport) -> str:
    """The report as JSON text."""
    return json.dumps(to_dict(report), indent=2, sort_keys=True) + "\n"


def _ts(at: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(at))


def _package_rows(diff: dict[str, Any]) -> list[list[str]]:
    return [[p["package"], p["change"], p["old"] or "-", p["new"] or "-", p["archive"] or "?",
             "SECURITY" if p["security"] else ""] for p in diff.get("packages", [])]


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    def cell(v: Any) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)] + \
        ["| " + " | ".join(cell(v) for v in r) + " |" for r in rows]


def _changes_words(diff: dict[str, Any]) -> list[str]:
    out = [f"role {r['role']}: {r['change']}" for r in diff.get("roles", [])]
    if diff.get("spec"):
        out.append(f"spec: {', '.join(diff['spec'])}")
    if diff.get("inputs"):
        out.append(f"other inputs: {', '.join(diff['inputs'])}")
    return out


def render_markdown(report: NightlyReport) -> str:
    """The report as Markdown."""
    lines = [f"# golden nightly {report.run_id}: {report.status}", "",
             f"{_ts(report.started_at)}, {report.finished_at - report.started_at:.0f} s: {report.summary()}", ""]
    lines += _md_table(["image", "outcome", "old build", "new build", "failed gate"],
                       [[i.image, i.outcome.value, i.old_build or "-", i.new_build or "-",
                         i.failed_gate.name if i.failed_gate else ""] for i in report.images])
    for i in report.images:
        lines += ["", f"## {i.image}: {i.outcome.value}", ""]
        lines += [f"- {r}" for r in i.reasons]
        if i.diff:
            lines += [f"- {w}" for w in _changes_words(i.diff)]
            sec = sum(1 for p in i.diff.get("packages", []) if p["security"])
            lines += [f"- {len(i.diff.get('packages', []))} package change(s), {sec} security update(s)"]
        for ch, b in i.published.items():
            lines.append(f"- {i.image}@{ch} -> {b}")
        if i.rollout:
            lines.append(f"- rollout: {i.rollout.get('summary', '')}")
        if i.gates:
            lines += [""] + _md_table(["gate", "result", "seconds", "detail"],
                                      [[g.name, "pass" if g.passed else "FAIL", f"{g.seconds:.1f}", g.detail]
                                       for g in i.gates])
        if i.diff and i.diff.get("packages"):
            lines += ["", "Packages (security updates first):", ""]
            lines += _md_table(["package", "change", "old", "new", "archive", ""], _package_rows(i.diff))
        for g in i.gates:
            if not g.passed and g.excerpt:
                lines += ["", f"{g.name} failed; excerpt:", "", "```", g.excerpt, "```"]
    return "\n".join(lines) + "\n"


_CSS = ("body{font:14px sans-serif;margin:2em}table{border-collapse:collapse;margin:.5em 0}"
        "td,th{border:1px solid #bbb;padding:3px 8px;text-align:left}.fail{color:#b00;font-weight:bold}"
        ".pass{color:#070}pre{background:#f4f4f4;padding:8px;overflow:auto}")


def _html_table(head: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    e = html.escape
    out = ["<table><tr>" + "".join(f"<th>{e(h)}</th>" for h in head) + "</tr>"]
    for n, r in enumerate(rows):
        cls = f' class="{classes[n]}"' if classes and classes[n] else ""
        out.append(f"<tr{cls}>" + "".join(f"<td>{e(str(v))}</td>" for v in r) + "</tr>")
    return "".join(out) + "</table>"


def render_html(report: NightlyReport) -> str:
    """One self-contained page: inline CSS, no scripts, every value escaped."""
    e = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>golden nightly {e(report.run_id)}"
             f"</title><style>{_CSS}</style></head><body>",
             f"<h1>golden nightly {e(report.run_id)}: "
             f"<span class=\"{'fail' if report.failed else 'pass'}\">{e(report.status)}</span></h1>",
             f"<p>{e(_ts(report.started_at))}, {report.finished_at - report.started_at:.0f} s: "
             f"{e(report.summary())}</p>",
             _html_table(["image", "outcome", "old build", "new build", "failed gate"],
                         [[i.image, i.outcome.value, i.old_build or "-", i.new_build or "-",
                           i.failed_gate.name if i.failed_gate else ""] for i in report.images],
                         ["fail" if i.outcome is Outcome.FAILED else "" for i in report.images])]
    for i in report.images:
        parts.append(f"<h2>{e(i.image)}: {e(i.outcome.value)}</h2><ul>")
        words = list(i.reasons) + (_changes_words(i.diff) if i.diff else []) + \
            [f"{i.image}@{ch} -> {b}" for ch, b in i.published.items()]
        parts += [f"<li>{e(w)}</li>" for w in words] + ["</ul>"]
        if i.gates:
            parts.append(_html_table(["gate", "result", "seconds", "detail"],
                                     [[g.name, "pass" if g.passed else "FAIL", f"{g.seconds:.1f}", g.detail]
                                      for g in i.gates], ["pass" if g.passed else "fail" for g in i.gates]))
        if i.diff and i.diff.get("packages"):
            parts.append(_html_table(["package", "change", "old", "new", "archive", ""], _package_rows(i.diff)))
        for g in i.gates:
            if not g.passed and g.excerpt:
                parts.append(f"<p class=\"fail\">{e(g.name)} failed:</p><pre>{e(g.excerpt)}</pre>")
    parts.append("</body></html>\n")
    return "".join(parts)
