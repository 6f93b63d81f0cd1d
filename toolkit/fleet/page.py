"""The fleet page: one self-contained HTML file (no external assets) of every host by rack, coloured by state. Pure.

It must open from a file on an air-gapped laptop, so styles, script and data are inline and
nothing is fetched. Every text from the fleet is escaped (``html.escape``; the JSON for the
details panel is escaped so it cannot close its ``<script>``). Hovering a cell shows its host's
summary (``title``) and how long ago it last reported; clicking it shows builds, drift paths and the
taint reason. Filters by state and rack and a search by host name hide the other cells; they start
from the address (``?state=failed&rack=rack2&q=web``), so a filtered view can be bookmarked, and the
served page (``/fleet``) reloads itself every ``REFRESH_S`` seconds keeping them.
"""

from __future__ import annotations

import html
import json
import time
from dataclasses import dataclass, field

from toolkit.fleet.hardware import Summary
from toolkit.fleet.states import HostState
from toolkit.fleet.status import HostStatus, slot_summary
from toolkit.state.db import ChannelRow, DriftRow, RunRow

COLOURS: dict[str, str] = {
    HostState.IN_SYNC: "#2e7d32", HostState.PENDING: "#1e88e5", HostState.STALE: "#f9a825",
    HostState.DRIFTED: "#ef6c00", HostState.TAINTED: "#8e24aa", HostState.FAILED: "#c62828",
    HostState.DRAINED: "#6d4c41", HostState.FELL_BACK: "#ad1457",
    HostState.NEVER_REPORTED: "#9e9e9e", HostState.NO_BUILD: "#455a64",
}
MAX_PATHS = 50  # drift paths per host in the page; the count says how many there are
REFRESH_S = 30  # the served page reloads itself this often

CSS = """
body{font:14px system-ui,sans-serif;margin:1.5em;color:#222;background:#fafafa}
h1{font-size:1.4em}h2{font-size:1.1em;margin:1em 0 .4em}
.legend span,.cell{display:inline-block}
.legend span{margin-right:1em}.legend i{display:inline-block;width:1em;height:1em;margin-right:.3em;
vertical-align:middle;border-radius:2px}
.grid{display:flex;flex-wrap:wrap;gap:4px}
.cell{width:88px;height:40px;border-radius:4px;color:#fff;font-size:11px;padding:3px;box-sizing:border-box;
cursor:pointer;overflow:hidden;white-space:nowrap;text-overflow:ellipsis}
.cell:hover{outline:2px solid #000}
table{border-collapse:collapse;margin:.3em 0 1em}td,th{border:1px solid #ccc;padding:2px 6px;text-align:left}
#details{position:fixed;right:1em;top:1em;width:32em;max-height:90vh;overflow:auto;background:#fff;
border:1px solid #888;padding:.8em;display:none;box-shadow:0 2px 8px #0004}
#details pre{white-space:pre-wrap;font-size:12px}
#filters{margin:.6em 0}#filters label{margin-right:1em}.cell small{opacity:.85}
.hidden{display:none!important}
"""

JS = """
const hosts = JSON.parse(document.getElementById('hosts-data').textContent);
function show(name) {
  const h = hosts[name]; const d = document.getElementById('details');
  const lines = [name + ' (' + h.state + ')', 'rack: ' + h.rack, 'image: ' + h.image,
    'desired: ' + (h.desired || '-'), 'served: ' + (h.served || '-'), 'observed: ' + (h.observed || '-'),
    'booted at: ' + (h.booted_at || '-'), 'last report: ' + h.last_report_age];
  if (h.taint) lines.push('TAINTED: ' + h.taint);
  if (h.rotation) lines.push('DRAINED: ' + h.rotation);
  if (h.fell_back) lines.push('last fall-back: build ' + h.fell_back + ' failed its boot; the other slot took over');
  if (h.slots) lines.push('slots: ' + h.slots);
  for (const s of h.stale) lines.push('stale: ' + s);
  for (const c of h.hw_changed) lines.push('HARDWARE CHANGED: ' + c);
  if (h.hw) lines.push('hardware: ' + h.hw);
  lines.push('drift (' + h.drift_count + '):');
  for (const p of h.drift) lines.push('  ' + p.kind + ' ' + p.path + '  (first seen ' + p.first_seen + ')');
  d.querySelector('pre').textContent = lines.join('\\n');
  d.style.display = 'block';
}
document.querySelectorAll('.cell').forEach(c => c.addEventListener('click', () => show(c.dataset.host)));
document.getElementById('close').addEventListener('click', () => {
  document.getElementById('details').style.display = 'none'; });
const controls = {state: document.getElementById('state-filter'), rack: document.getElementById('rack-filter'),
  q: document.getElementById('search')};
function applyFilters() {
  const state = controls.state.value, rack = controls.rack.value, q = controls.q.value.trim().toLowerCase();
  document.querySelectorAll('.rack').forEach(sec => {
    let shown = 0;
    sec.querySelectorAll('.cell').forEach(c => {
      const ok = (!state || c.dataset.state === state) && (!rack || sec.dataset.rack === rack) &&
        (!q || c.dataset.host.toLowerCase().includes(q));
      c.classList.toggle('hidden', !ok); if (ok) shown++;
    });
    sec.classList.toggle('hidden', shown === 0);
  });
  const url = new URL(window.location.href);
  for (const [k, el] of Object.entries(controls)) { if (el.value) url.searchParams.set(k, el.value);
    else url.searchParams.delete(k); }
  if (url.protocol !== 'file:') history.replaceState(null, '', url);
}
const params = new URLSearchParams(window.location.search);
for (const [k, el] of Object.entries(controls)) { if (params.get(k)) el.value = params.get(k);
  el.addEventListener('input', applyFilters); }
applyFilters();
"""


@dataclass(frozen=True)
class FleetPage:
    """What the fleet page shows: hosts, their drift, channels and recent events."""
    generated_at: float
    hosts: list[HostStatus]
    drift: dict[str, list[DriftRow]]
    channels: list[ChannelRow]
    runs: list[RunRow]
    hardware: dict[str, Summary] = field(default_factory=dict)  # host -> its latest facts, summarised


def _when(ts: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts)) if ts else "-"


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _title(h: HostStatus) -> str:
    parts = [f"{h.name}: {h.state}", f"observed {h.observed or '-'}", f"desired {h.desired or '-'}"]
    if h.taint:
        parts.append(f"tainted: {h.taint}")
    if h.rotation:
        parts.append(h.rotation)
    if h.drift:
        parts.append(f"{len(h.drift)} drifted path(s)")
    if h.hw_changed:
        parts.append("hardware changed")
    if h.state == HostState.FELL_BACK:
        parts.append(f"fell back from {h.fell_back}")
    return " | ".join(parts)


def age(seconds: float | None) -> str:
    """``42s``, ``5m``, ``3h``, ``2d`` ago; ``never`` for no report."""
    if seconds is None:
        return "never"
    seconds = max(0.0, seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit} ago"
    return f"{int(seconds)}s ago"


def _cell(h: HostStatus, now: float) -> str:
    colour = COLOURS.get(h.state, "#000")
    seen = age(now - h.last_report if h.last_report else None)
    return (f'<div class="cell" data-host="{_e(h.name)}" data-state="{_e(h.state)}" data-rack="{_e(h.rack)}" '
            f'style="background-color:{colour}" title="{_e(_title(h))} | last report {_e(seen)}">'
            f'{_e(h.name)}<br>{_e(h.state)} <small>{_e(seen)}</small></div>')


def _filters(hosts: list[HostStatus]) -> str:
    states = "".join(f'<option value="{_e(s)}">{_e(s)}</option>' for s in COLOURS)
    racks = "".join(f'<option value="{_e(r)}">{_e(r)}</option>' for r in sorted({h.rack or "(no rack)" for h in hosts}))
    return ('<div id="filters"><label>state <select id="state-filter"><option value="">all</option>'
            f'{states}</select></label><label>rack <select id="rack-filter"><option value="">all</option>{racks}'
            '</select></label><label>host <input id="search" type="search" placeholder="name contains"></label></div>')


def _racks(hosts: list[HostStatus], now: float) -> str:
    racks: dict[str, list[HostStatus]] = {}
    for h in hosts:
        racks.setdefault(h.rack or "(no rack)", []).append(h)
    return "".join(f'<section class="rack" data-rack="{_e(r)}"><h2>{_e(r)} ({len(hs)})</h2><div class="grid">'
                   + "".join(_cell(h, now) for h in hs) + "</div></section>" for r, hs in sorted(racks.items()))


def _legend(hosts: list[HostStatus]) -> str:
    counts = {s: sum(1 for h in hosts if h.state == s) for s in COLOURS}
    return '<div class="legend">' + "".join(
        f'<span data-state="{_e(s)}"><i style="background-color:{c}"></i>{_e(s)} ({counts[s]})</span>'
        for s, c in COLOURS.items()) + "</div>"


def _table(headers: list[str], rows: list[list[object]]) -> str:
    head = "".join(f"<th>{_e(x)}</th>" for x in headers)
    body = "".join("<tr>" + "".join(f"<td>{_e(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _hw_line(s: Summary | None) -> str:
    if s is None:
        return ""
    memory = f"{s.memory_mib} MiB" if s.memory_mib is not None else "?"
    return "; ".join(x for x in (" ".join(y for y in (s.vendor, s.model) if y), s.serial and f"serial {s.serial}",
                                 s.cpu, memory, s.disks and f"disks {s.disks}", s.nics and f"NICs {s.nics}") if x)


def _host_data(h: HostStatus, drift: list[DriftRow], now: float, hw: Summary | None = None) -> dict[str, object]:
    return {"last_report_age": age(now - h.last_report if h.last_report else None),
            "hw_changed": list(h.hw_changed), "hw": _hw_line(hw),
            "state": h.state, "rack": h.rack, "image": h.image, "desired": h.desired, "served": h.served,
            "observed": h.observed, "booted_at": h.booted_at, "taint": h.taint, "stale": list(h.stale),
            "rotation": h.rotation, "slots": slot_summary(h), "fell_back": h.fell_back,
            "drift_count": len(drift) or len(h.drift),
            "drift": [{"path": d.path, "kind": d.kind, "first_seen": _when(d.first_seen)} for d in drift[:MAX_PATHS]]}


def _script_json(data: object) -> str:
    """JSON that cannot end its <script> element or open a comment there."""
    return json.dumps(data, sort_keys=True).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def render_page(page: FleetPage, live: bool = False) -> str:
    """The page; ``live`` (served by golden serve) reloads itself every REFRESH_S seconds."""
    now = page.generated_at
    data = {h.name: _host_data(h, page.drift.get(h.name, []), now, page.hardware.get(h.name)) for h in page.hosts}
    refresh = f'<meta http-equiv="refresh" content="{REFRESH_S}">' if live else ""
    channels = _table(["IMAGE", "CHANNEL", "BUILD", "SINCE"],
                      [[c.image, c.channel, c.build_id, _when(c.updated_at)] for c in page.channels])
    runs = _table(["RUN", "STARTED", "USER", "SELECTION", "TARGET", "STATUS", "SUMMARY"],
                  [[r.id, _when(r.created_at), r.user, r.pattern, f"{r.image}/{r.target_build}", r.status,
                    r.summary] for r in page.runs])
    return (
        f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">{refresh}<title>golden fleet</title>"
        f"<style>{CSS}</style></head><body>"
        f"<h1>golden fleet: {len(page.hosts)} host(s)</h1><p>generated {_e(_when(page.generated_at))}</p>"
        f"{_legend(page.hosts)}{_filters(page.hosts)}{_racks(page.hosts, now)}"
        f"<h2>Images and channels</h2>{channels}<h2>Last runs</h2>{runs}"
        '<div id="details"><button id="close" type="button">close</button><pre></pre></div>'
        f'<script type="application/json" id="hosts-data">{_script_json(data)}</script>'
        f"<script>{JS}</script></body></html>\n"
    )
