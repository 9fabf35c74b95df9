"""The HTML page of a differential run (jinja2, the report's stylesheet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2

from harness.report.templates import CSS

PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Differential testing: {{ s.a }} vs {{ s.b }}</title>
<style>{{ css }}</style></head><body>
<h1>Differential testing: {{ s.a }} vs {{ s.b }}</h1>
<p class="meta">seed {{ s.seed }} &middot; {{ s.cases }} cases, {{ s.flows }} flows in {{ s.seconds }} s
({{ s.cases_per_minute }} cases per minute){% if s.errors %} &middot; cases that did not run: {{ s.errors }}{% endif %}</p>
<table><tr><th>class</th><th>disagreements</th><th>declared</th></tr>
{% for c in classes %}<tr><td>{{ c }}</td><td class="n">{{ s.disagreements.get(c, 0) }}</td>
<td class="n">{{ s.declared.get(c, 0) }}</td></tr>{% endfor %}</table>
<h2>Disagreements ({{ found|length }})</h2>
{% for f in found %}<div class="check fail">
<div><span class="g g-fail">{{ f["class"] }}</span> <span class="name">case {{ f.case }}: {{ f.flow }}</span></div>
<div class="meta">{% for k, v in f.facts.items() %}{{ k }}={{ v }} {% endfor %}</div>
<table><tr><th>{{ s.a }}</th><td>{{ f.a.text }}</td></tr><tr><th>{{ s.b }}</th><td>{{ f.b.text }}</td></tr></table>
{% if f.scenario %}<details><summary>shrunk scenario {{ f.scenario }} ({{ f.shrink_runs }} runs)</summary>
<pre>{{ texts.get(f.scenario, "") }}</pre></details>{% endif %}
</div>{% endfor %}
{% if s.not_reproduced %}<p class="warn">Not reproduced on a second run of both proxiers (a random
draw decided them; not counted above): {{ s.not_reproduced }}</p>{% endif %}
<h2>Declared differences ({{ declared|length }})</h2>
<table><tr><th>reason</th><th>flows</th></tr>
{% for r, n in s.declared_reasons.items() %}<tr><td>{{ r }}</td><td class="n">{{ n }}</td></tr>{% endfor %}</table>
<details><summary>every declared disagreement</summary>
{% for f in declared %}<div class="check xfail"><span class="g g-xfail">{{ f["class"] }}</span>
<span class="name">case {{ f.case }}: {{ f.flow }}</span><div class="reason">{{ f.declared }}</div>
<div class="meta">{{ s.a }}: {{ f.a.text }} &middot; {{ s.b }}: {{ f.b.text }}</div></div>{% endfor %}
</details></body></html>
"""


def render(summary: dict[str, Any], findings: list[dict[str, Any]]) -> str:
    """The page: the summary, each disagreement with its shrunk scenario, the declared ones."""
    from harness.diff.outcome import CLASSES

    texts = {}
    for f in findings:
        if f.get("scenario") and Path(f["scenario"]).is_file():
            texts[f["scenario"]] = Path(f["scenario"]).read_text()
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    return env.from_string(PAGE).render(
        s=summary, css=CSS, classes=CLASSES, texts=texts,
        found=[f for f in findings if not f["declared"] and f.get("reproduced") is not False],
        declared=[f for f in findings if f["declared"]])
