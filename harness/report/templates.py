"""Jinja2 templates of the HTML report and the compatibility matrix (strings, so they
ship with the package without package-data configuration)."""

CSS = """
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5em auto;max-width:1150px;color:#1d2329;padding:0 1em}
h1{font-size:1.5em;margin:.2em 0}h2{font-size:1.2em;margin:1.4em 0 .4em;border-bottom:1px solid #d0d7de}
table{border-collapse:collapse;margin:.4em 0}th,td{border:1px solid #d0d7de;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f6f8fa}td.n{text-align:right;font-variant-numeric:tabular-nums}
.g{display:inline-block;min-width:6.5em;text-align:center;border-radius:3px;padding:0 .4em;font-weight:600;font-size:.85em}
.g-pass{background:#dafbe1;color:#116329}.g-fail{background:#ffd8d3;color:#a40e26}
.g-skip{background:#eaeef2;color:#57606a}.g-xfail{background:#fff1c2;color:#7d4e00}
.g-informational{background:#ddf4ff;color:#0a3069}.g-none{background:#fff;color:#8c959f}
.check{border:1px solid #d0d7de;border-radius:4px;margin:.35em 0;padding:.35em .6em}
.check.fail{border-left:5px solid #cf222e}.check.xfail{border-left:5px solid #d4a72c}
.check.informational{border-left:5px solid #54aeff}
.row{margin:.25em 0 .25em .8em;padding-top:.2em;border-top:1px dotted #d0d7de}
.row .g{min-width:5.5em;font-size:.75em}.name{font-family:ui-monospace,monospace;font-size:.85em}
.bid{font-family:ui-monospace,monospace;font-weight:600}.must{margin:.15em 0}
.meta{color:#57606a;font-size:.85em}.reason{color:#57606a;margin:.15em 0}
pre{background:#f6f8fa;border:1px solid #d0d7de;padding:.5em;overflow:auto;max-height:28em;font-size:12px;margin:.3em 0}
details{margin:.3em 0}summary{cursor:pointer;font-weight:600}details details{margin-left:1em}
.tag{font-size:.75em;background:#eaeef2;border-radius:3px;padding:0 .3em;margin-left:.3em}
.warn{background:#fff8c5;border:1px solid #d4a72c;padding:.5em;border-radius:4px}
svg.chart text{font:11px system-ui,sans-serif;fill:#1d2329}svg.chart .ax{fill:#57606a}
svg.chart .band{fill:#8c959f;opacity:.25}svg.chart .bar{fill:#0969da}svg.chart .bar.bad{fill:#cf222e}
svg.chart .exp{stroke:#1d2329;stroke-width:2}svg.chart .axis{stroke:#8c959f}
svg.chart .mk{font:bold 9px ui-monospace,monospace}svg.chart .zebra{fill:#f6f8fa}
svg.chart .pt{stroke:#fff;stroke-width:.5}svg.chart .noreply{fill:#fff;stroke:#cf222e;stroke-width:1.2}
svg.chart .marker{stroke:#1d2329;stroke-width:1.5;stroke-dasharray:5 3}
svg.chart .pub{stroke:#0969da;stroke-width:1.2;stroke-dasharray:4 3}svg.chart .ack{stroke:#0969da;stroke-width:1.5}
svg.chart .member{fill:#1a7f37;opacity:.12}
figure.plot{margin:.3em 0}figure.plot figcaption{color:#57606a;font-size:.85em;max-width:760px}
figure.plot .alt{color:#1d2329}
a{color:#0969da}
"""

REPORT = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Service proxy conformance: {{ label }}</title>
<style>{{ css }}</style></head>
<body>
<h1>Service proxy conformance: {{ label }}</h1>
{% if bench_link %}<p class="meta">Measurements of the proxiers: <a href="{{ bench_link }}">{{ bench_link }}</a></p>{% endif %}
<p class="meta">{{ report.started or "?" }} &middot; {{ "%.1f"|format(report.duration or 0) }} s
 &middot; seed {{ report.seed }} &middot; exit status {{ report.exitstatus if report.exitstatus is not none else "?" }}
 {% if report.known_gaps_file %}&middot; known gaps from {{ report.known_gaps_file }}{% endif %}</p>
{% if not report.complete %}<p class="warn">This run did not finish: the report holds the
{{ checks|length }} checks that ended before it stopped.</p>{% endif %}
<p>{% for g in grades %}<span class="g g-{{ g }}">{{ summary[g] }} {{ g }}</span> {% endfor %}</p>

<h2>Environment</h2>
<table>
{% for key, value in env.items() %}<tr><th>{{ key }}</th><td>{% if value is none %}&ndash;{% elif value is sequence and value is not string %}{{ value|join(", ") }}{% else %}{{ value }}{% endif %}</td></tr>
{% endfor %}</table>

<h2>Summary by feature</h2>
<table><tr><th>feature</th>{% for g in grades %}<th>{{ g }}</th>{% endfor %}<th>total</th></tr>
{% for f in features %}<tr><td>{% if f.behaviors %}<a href="#f-{{ f.name }}">{{ f.name }}</a>{% else %}{{ f.name }}{% endif %}{% if f.doc %} <span class="meta">{{ f.doc }}</span>{% endif %}</td>
{% for g in grades %}<td class="n">{% if f.counts[g] %}<span class="g g-{{ g }}">{{ f.counts[g] }}</span>{% else %}<span class="meta">0</span>{% endif %}</td>{% endfor %}
<td class="n">{{ f.total }}</td></tr>
{% endfor %}</table>

{% if bugs %}<h2 id="bugs">Bug reproductions</h2>
<p class="meta">Each scenario of the bug library reproduces one reported Service bug; a failure
means this proxier still has it.{% if release %} For kube-proxy {{ release }}, "this release"
says whether it predates the fix (from the scenario's history).{% endif %}</p>
<table><tr><th>bug</th><th>link</th><th>outcome</th><th>component</th><th>fixed in</th>{% if release %}<th>this release</th>{% endif %}</tr>
{% for r in bugs %}<tr><td><a href="#{{ r.anchor }}">{{ r.bug }}</a></td><td>{% if r.link %}<a href="{{ r.link }}">{{ r.link_text }}</a>{% endif %}</td>
<td><span class="g g-{{ r.grade }}">{{ r.outcome }}</span></td><td>{{ r.component }}</td><td>{{ r.fixed_in }}</td>{% if release %}<td>{{ r.expected or "&ndash;"|safe }}</td>{% endif %}</tr>
{% endfor %}</table>{% endif %}

{% if failures %}<h2>Failures</h2><ul>
{% for c in failures %}<li><a href="#{{ c.anchor }}">{{ c.behavior or c.nodeid }}</a> <span class="meta">{{ c.nodeid }}</span>{% if c.summary %}<br><code>{{ c.summary }}</code>{% endif %}</li>
{% endfor %}</ul>{% endif %}

{% for f in features if f.behaviors %}
<h2 id="f-{{ f.name }}">{{ f.name }}</h2>
{% for b in f.behaviors %}
<div class="check {{ b.grade }}">
<div><span class="g g-{{ b.grade }}">{{ b.grade }}</span>
 <span class="bid">{% if b.ref %}<a href="{{ b.ref }}">{{ b.behavior or b.key }}</a>{% else %}{{ b.behavior or b.key }}{% endif %}</span>
 <span class="meta">{% for g, n in b.counts.items() %}{{ n }} {{ g }}{% if not loop.last %}, {% endif %}{% endfor %}</span></div>
{% if b.must %}<div class="must">{{ b.must }}</div>{% endif %}
{% for c in b.checks %}
<div class="row" id="{{ c.anchor }}"><span class="g g-{{ c.grade }}">{{ c.grade }}</span>
 <span class="name" title="{{ c.nodeid }}">{{ c.name }}</span>
 {% for t in c.features[1:] %}<span class="tag">{{ t }}</span>{% endfor %}
 <span class="meta">{{ "%.2f"|format(c.duration or 0) }} s{% if c.phase and c.phase != "call" %} &middot; decided in {{ c.phase }}{% endif %}</span>
{% if c.reason %}<div class="reason">{{ c.reason }}
 {% if c.known_gap and c.known_gap.link %}(<a href="{{ c.known_gap.link }}">link</a>){% endif %}</div>{% endif %}
{% if c.grade == "fail" and c.summary %}<div class="reason"><code>{{ c.summary }}</code></div>{% endif %}
{% if c.flows %}
<details{% if c.grade == "fail" %} open{% endif %}><summary>flows ({% for o, n in c.flow_counts.items() %}{{ n }} {{ o }}{% if not loop.last %}, {% endif %}{% endfor %})</summary>
<table class="flows"><tr><th>flow</th><th>step</th><th>outcome</th><th>expected</th><th>observed</th></tr>
{% for fl in c.flows %}<tr><td>{{ fl.name }}{% if fl.line %} <span class="meta">line {{ fl.line }}</span>{% endif %}</td><td>{{ fl.step }}</td>
<td><span class="g g-{{ {"passed": "pass", "failed": "fail"}.get(fl.outcome, "skip") }}">{{ fl.outcome }}</span></td>
<td>{{ fl.expected }}</td><td>{{ fl.observed }}{% for x in fl.failures %}<br><code>{{ x }}</code>{% endfor %}</td></tr>
{% endfor %}</table>
</details>
{% endif %}
{% for s in c.stats %}
<details{% if c.grade in ("fail", "informational") %} open{% endif %}><summary>statistics{% if s.check %}: {{ s.check }}{% endif %}</summary>
{{ s.svg }}
{% if s.fields %}<table>{% for k, v in s.fields %}<tr><th>{{ k }}</th><td>{{ v }}</td></tr>{% endfor %}</table>{% endif %}
{% if s.probes %}<details><summary>probes ({{ s.probes|length }}{% if s.probes_total > s.probes|length %} of {{ s.probes_total }}{% endif %})</summary><pre>{{ s.probes|join("\n") }}</pre></details>{% endif %}
</details>
{% endfor %}
{% for p in c.plots %}
<details open><summary>{{ p.title }}</summary>
{% if p.note %}<p class="meta">{{ p.note }}</p>{% else %}<figure class="plot">{{ p.svg }}
<figcaption><strong>How to read:</strong> {{ p.caption }} <span class="alt">{{ p.alt }}</span></figcaption></figure>{% endif %}
</details>
{% endfor %}
{% if c.message or c.evidence or c.captured or c.observations %}
<details{% if c.grade == "fail" %} open{% endif %}><summary>{% if c.grade == "fail" %}failure{% else %}details{% endif %}</summary>
{% if c.message %}<pre>{{ c.message }}</pre>{% endif %}
{% for title, text in c.evidence.items() %}<details><summary>{{ title }}</summary><pre>{{ text }}</pre></details>
{% endfor %}
{% if c.observations %}<details><summary>observations</summary><pre>{{ c.observations }}</pre></details>{% endif %}
{% for title, text in c.captured.items() %}<details><summary>{{ title }}</summary><pre>{{ text }}</pre></details>
{% endfor %}
</details>
{% endif %}
</div>
{% endfor %}
</div>
{% endfor %}
{% endfor %}
<p class="meta">Rendered from report.json by harness.report.</p>
</body></html>
"""

MATRIX = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Service proxy compatibility matrix</title>
<style>{{ css }} td.c{text-align:center} th.env{font-size:.85em;max-width:12em}</style></head>
<body>
<h1>Service proxy compatibility matrix</h1>
{% if bench_link %}<p class="meta">Measurements of the proxiers: <a href="{{ bench_link }}">{{ bench_link }}</a></p>{% endif %}
<p class="meta">{{ runs|length }} runs, {{ rows|length }} behaviours. A cell aggregates the
behaviour's checks in that run (fail &gt; xfail &gt; pass &gt; informational &gt; skip);
the counts are in its tooltip.</p>
<table><tr><th>behaviour</th>{% for r in runs %}<th class="env" title="{{ r.path }}">{{ r.label }}</th>{% endfor %}</tr>
{% for row in rows %}<tr><td><span class="bid">{{ row.behavior }}</span>{% if row.must %}<div class="meta">{{ row.must }}</div>{% endif %}</td>
{% for cell in row.cells %}<td class="c">{% if cell %}<span class="g g-{{ cell.grade }}" title="{{ cell.title }}">{{ cell.grade }}</span>{% else %}<span class="g g-none">&ndash;</span>{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
<h2>Runs</h2><table><tr><th>label</th><th>file</th><th>started</th><th>summary</th></tr>
{% for r in runs %}<tr><td>{{ r.label }}</td><td>{{ r.path }}</td><td>{{ r.started }}</td><td>{% for g, n in r.summary.items() if n %}<span class="g g-{{ g }}">{{ n }} {{ g }}</span> {% endfor %}</td></tr>
{% endfor %}</table>
</body></html>
"""
