"""hcmon (hcmon.cgi): an HTML page of every check of one or several hc monitors.

Run from a shell it prints the page to stdout; installed as a CGI program (the
web server sets GATEWAY_INTERFACE) it prints the Content-Type header first and
takes its hosts from the HCMON_HOSTS environment variable.
"""

from __future__ import annotations

import argparse
import html
import os
import sys
import time
from urllib.parse import parse_qs, quote

from failover import client, model, ports, protocol
from failover.cli import common
from failover.timefmt import age, local_time

EPILOG = f"""hcmon asks each hc (started with -m) for its checks and their recent transitions
over faild's protocol and renders one HTML page: the state of every check (UP,
FAIL, RECOVER = not known yet), since when, the last result, the last {20} results
as a strip, and the history of state changes.

As a CGI program (install a copy or symlink named hcmon.cgi in the web server's
cgi-bin), the page's hosts come from the environment, not the request:
  HCMON_HOSTS      hosts to show, separated by spaces or commas (default: localhost:{ports.HC_MONITOR})
  HCMON_COMMUNITY  community string (default: public)
and the query string may narrow the page: ?host=HOST (one of HCMON_HOSTS) and
?check=NAME (one check and its own recent transitions).

examples:
  hcmon                             the local hc as HTML on stdout
  hcmon www1 www2:1900 > hc.html    two hosts (port {ports.HC_MONITOR} unless given)
  hcmon --refresh 10 --history 50   page reloading itself every 10 s"""

STYLE = """
body{font-family:sans-serif;margin:1em 2em;color:#222}
table{border-collapse:collapse;margin-bottom:1.5em}
th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}
th{background:#eee}
.UP{background:#c8f0c8}.FAIL{background:#f4b4b4}.RECOVER{background:#f8e8a8}
.error{color:#a00;font-weight:bold}
.strip{font-family:monospace;letter-spacing:1px}.ok{color:#080}.bad{color:#c00}
small{color:#666}
"""


def fetch(host: str, community: str, timeout: float, retries: int, history: int,
          port: int = ports.HC_MONITOR, check: str | None = None) -> dict:
    """One hc's list (with details) and history as a dict; errors become an 'error' entry.
    Every record and transition is validated (model.from_wire), the details of each check
    too (_details): a hostile or broken hc gives an error line or fewer details, never a
    traceback."""
    try:
        endpoint = client.endpoint_for(host, port)
        with client.Client(endpoint, community, timeout, retries) as c:
            reply = c.call("list")
            info, records = model.list_from_wire(reply)
            services = []
            for rec, raw in zip(records, reply["services"], strict=True):
                if not isinstance(raw.get("hc"), dict):  # a list too big for one message comes without details
                    got = c.call("get", service=rec.name)["services"]  # validated, possibly empty
                    raw = got[0] if got else {}
                services.append({**rec.to_wire(), "hc": _details(raw.get("hc"))})
            result = {"host": host, "name": info.name, "started": info.started, "services": services, "history": []}
            if history:
                result["history"] = [t.to_wire() for t in c.history(check, limit=history)]
            return result
    except client.ClientError as exc:
        return {"host": host, "error": str(exc), "exit": common.exit_code(exc)}
    except protocol.ProtocolError as exc:
        return {"host": host, "error": f"bad reply from {host}: {exc}", "exit": common.EXIT_REFUSED}


_TEXTS = ("kind", "check", "target", "detail", "reason", "own")
_COUNTS = ("fall", "rise", "checks", "failures", "streak")


def _details(raw: object) -> dict:
    """The check details hc adds to a record, each kept only if it has its type and range
    (text without control characters); what is not is left out, and shown as unknown."""
    if not isinstance(raw, dict):
        return {}
    out: dict = {}
    for key in _TEXTS:
        if isinstance(raw.get(key), str) and len(raw[key]) <= 4096:
            out[key] = protocol.clean_text(raw[key])
    if isinstance(raw.get("recent"), str) and len(raw["recent"]) <= 1000 and set(raw["recent"]) <= {"+", "-"}:
        out["recent"] = raw["recent"]
    deps = raw.get("deps")
    if isinstance(deps, list) and len(deps) <= 1000 and all(protocol.valid_name(d) for d in deps):
        out["deps"] = deps
    for key, low, high in (("last_check", 0, model.LATEST_TIME), ("latency", 0, 1e6), ("interval", 0, 1e9),
                           ("timeout", 0, 1e9)):
        if type(raw.get(key)) in (int, float) and low <= raw[key] <= high:  # NaN is in no range
            out[key] = raw[key]
    for key in _COUNTS:
        if type(raw.get(key)) is int and -10**9 <= raw[key] <= 10**9:
            out[key] = raw[key]
    if isinstance(raw.get("ok"), bool):
        out["ok"] = raw["ok"]
    return out


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _strip(recent: str) -> str:
    return "".join(f'<span class="{"ok" if c == "+" else "bad"}">{"&#9632;" if c == "+" else "&#9633;"}</span>'
                   for c in recent)


def render(results: list[dict], refresh: int = 0, check: str | None = None,
           link: str | None = None, now: float | None = None) -> str:
    """The whole HTML page.  ``link``: the CGI's own URL, to make check names links."""
    now = now or time.time()
    out = ["<!DOCTYPE html>", '<html><head><meta charset="utf-8">',
           f"<title>hc monitor{' - ' + _e(check) if check else ''}</title>"]
    if refresh > 0:
        out.append(f'<meta http-equiv="refresh" content="{int(refresh)}">')
    out += [f"<style>{STYLE}</style></head><body>",
            f"<h1>Health checks{' - ' + _e(check) if check else ''}</h1>",
            f"<p><small>{_e(local_time(now))}</small></p>"]
    for r in results:
        if "error" in r:
            out.append(f'<h2>{_e(r["host"])}</h2><p class="error">{_e(r["error"])}</p>')
            continue
        services = [s for s in r["services"] if check in (None, s["name"])]
        counts = {state: sum(1 for s in services if s["state"] == state) for state in ("UP", "RECOVER", "FAIL")}
        summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        out.append(f'<h2>{_e(r["host"])} <small>hc on {_e(r["name"])}, up {_e(age(r["started"], now))}'
                   f'{"; " + summary if summary else ""}</small></h2>')
        if not services:
            out.append("<p>(no checks)</p>")
        else:
            out.append("<table><tr><th>check</th><th>state</th><th>since</th><th>kind</th><th>target</th>"
                       "<th>last result</th><th>recent (oldest first)</th><th>why</th></tr>")
            for s in services:
                out.append(_row(r["host"], s, link, now))
            out.append("</table>")
        history = [t for t in r.get("history", []) if check in (None, t["service"])]
        if history:
            out.append("<table><tr><th>time</th><th>check</th><th>change</th><th>reason</th></tr>")
            for t in reversed(history):
                out.append(f'<tr><td>{_e(local_time(t["time"]))}</td><td>{_e(t["service"])}</td>'
                           f'<td>{_e(t["old"] or "-")} &rarr; <span class="{_e(t["new"])}">{_e(t["new"])}</span>'
                           f'</td><td>{_e(t.get("reason", ""))}</td></tr>')
            out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


def page(hosts: list[str], community: str = protocol.DEFAULT_COMMUNITY, timeout: float = 1.0,
         history: int = 30, check: str | None = None, refresh: int = 0) -> str:
    """The whole page for these hc monitors in one call (for a dashboard's /hc page)."""
    results = [fetch(h, community, timeout, 0, history, ports.HC_MONITOR, check) for h in hosts]
    return render(results, refresh, check)


def _row(host: str, s: dict, link: str | None, now: float) -> str:
    hc = s.get("hc") or {}
    name = _e(s["name"])
    if link:
        name = f'<a href="{_e(link)}?host={quote(host)}&amp;check={quote(s["name"])}">{name}</a>'
    last = "never"
    if hc.get("last_check"):
        latency = f", {hc['latency'] * 1000:.0f} ms" if hc.get("latency") is not None else ""
        last = (f'{"ok" if hc.get("ok") else "FAILED"} {_e(age(hc["last_check"], now))} ago{latency}: '
                f'{_e(hc.get("detail", ""))}')
    damping = f' <small>(fall {hc["fall"]}, rise {hc["rise"]}, every {hc["interval"]:g} s)</small>' \
        if all(k in hc for k in ("fall", "rise", "interval")) else ""
    deps = f'<br><small>needs {_e(", ".join(hc["deps"]))}</small>' if hc.get("deps") else ""
    return (f'<tr><td>{name}{deps}</td><td class="{_e(s["state"])}">{_e(s["state"])}</td>'
            f'<td>{_e(local_time(s["last_change"]))}<br><small>{_e(age(s["last_change"], now))}</small></td>'
            f'<td>{_e(hc.get("kind", "?"))}</td><td>{_e(hc.get("check") or hc.get("target", ""))}</td>'
            f'<td>{last}</td><td class="strip">{_strip(hc.get("recent", ""))}{damping}</td>'
            f'<td>{_e(hc.get("reason", ""))}</td></tr>')


def cgi_hosts(environ: dict) -> tuple[list[str], str | None, str | None]:
    """(hosts, check filter, error) from HCMON_HOSTS and QUERY_STRING."""
    configured = [h for h in environ.get("HCMON_HOSTS", f"localhost:{ports.HC_MONITOR}").replace(",", " ").split()]
    query = parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=False)
    hosts = configured
    if "host" in query:
        wanted = query["host"]
        unknown = [h for h in wanted if h not in configured]
        if unknown:
            return [], None, f"host {unknown[0]!r} is not one of HCMON_HOSTS"
        hosts = wanted
    check = query.get("check", [None])[0]
    if check is not None and not protocol.valid_name(check):
        return [], None, "invalid check name"
    return hosts, check, None


def build_parser() -> argparse.ArgumentParser:
    p = common.parser("hcmon", "HTML view of the checks of one or several hc monitors (hc -m). "
                      "Also runs as the CGI program hcmon.cgi.", EPILOG)
    common.add_client_options(p)
    p.set_defaults(port=ports.HC_MONITOR, retries=0)
    p.add_argument("--history", type=int, default=30, metavar="N",
                   help="transitions to show per host (default: %(default)s, at most 100; 0: none)")
    p.add_argument("--refresh", type=int, default=0, metavar="SECONDS",
                   help="make the page reload itself every SECONDS")
    p.add_argument("--check", help="show only this check")
    p.add_argument("hosts", nargs="*", default=[], metavar="HOST[:PORT]",
                   help=f"hc monitors to ask (default: localhost:{ports.HC_MONITOR})")
    return p


def main(argv: list[str] | None = None) -> int:
    cgi = "GATEWAY_INTERFACE" in os.environ
    p = build_parser()
    # A CGI may get the query string's words as arguments: ignore them.
    args = p.parse_args([] if cgi else argv)
    history = max(0, min(args.history, 100))  # keeps a reply within the protocol's size limit
    if cgi:
        hosts, check, error = cgi_hosts(dict(os.environ))
        community = os.environ.get("HCMON_COMMUNITY", args.community)
        refresh = args.refresh or 30
        if error:
            sys.stdout.write("Status: 400 Bad Request\nContent-Type: text/plain; charset=utf-8\n\n"
                             f"hcmon: {error}\n")
            return common.EXIT_USAGE
    else:
        hosts, check, community, refresh = args.hosts or [f"localhost:{ports.HC_MONITOR}"], args.check, \
            args.community, args.refresh
    results = [fetch(h, community, args.timeout, args.retries, history, args.port, check) for h in hosts]
    page = render(results, refresh, check, os.environ.get("SCRIPT_NAME") if cgi else None)
    if cgi:
        sys.stdout.write("Content-Type: text/html; charset=utf-8\n\n")
    sys.stdout.write(page)
    sys.stdout.flush()
    errors = [r["exit"] for r in results if "error" in r]
    if not cgi:
        for r in results:
            if "error" in r:
                print(f"hcmon: {r['host']}: {r['error']}", file=sys.stderr)
    return 0 if cgi or not errors else max(errors)


if __name__ == "__main__":
    sys.exit(main())
