"""Era profiles: behaviours kube-proxy changed on purpose between releases.

A conformance check states today's rule. Where kube-proxy's visible behaviour changed on
purpose (not a bug fix: a decision, with a release note), a check run against an older
release must judge it by that release's own rule. ``PROFILES`` lists those behaviours: per
behaviour id, the release ranges and what each expects. A check asks
``expectation(BEHAVIOUR, proxier_spec.release)``; a proxier that is not a kube-proxy
build (``release`` None) gets today's expectation.

Only what was verified against a real build of each side is listed (docs/eras.md says
which builds).

    from harness import eras
    want = eras.expectation("service/labels/headless-on-service", proxier_spec.release)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Era:
    """``expect`` holds for releases in [since, until) (None: unbounded)."""

    since: str | None
    until: str | None
    expect: str
    why: str = ""

    def covers(self, release: str) -> bool:
        from harness.kubebins import Version

        r = Version.parse(release)
        return ((self.since is None or r >= Version.parse(self.since))
                and (self.until is None or r < Version.parse(self.until)))


@dataclass(frozen=True)
class Profile:
    behaviour: str
    question: str
    eras: tuple[Era, ...]
    link: str
    verified_with: tuple[str, ...] = ()  # kube-proxy builds each side was checked on

    @property
    def today(self) -> str:
        return self.eras[-1].expect


PROFILES: dict[str, Profile] = {p.behaviour: p for p in (
    Profile(
        "service/labels/headless-on-service",
        "Is a ClusterIP Service labelled service.kubernetes.io/headless proxied?",
        (Era(None, "v1.36.0", "not-proxied",
             "one label selector (!service-proxy-name,!headless) for Services and EndpointSlices"),
         Era("v1.36.0", None, "proxied",
             "service-proxy-name is read on Services, headless on EndpointSlices only")),
        "https://github.com/kubernetes/kubernetes/pull/134623",
        ("v1.20.15", "v1.33.13", "v1.36.3", "v1.37.2"),
    ),
    Profile(
        "service/labels/proxy-name-on-slices",
        "Are EndpointSlices labelled service.kubernetes.io/service-proxy-name ignored?",
        (Era(None, "v1.36.0", "ignored", "the same selector as for Services"),
         Era("v1.36.0", None, "used", "only service.kubernetes.io/headless is read on slices")),
        "https://github.com/kubernetes/kubernetes/pull/134623",
        ("v1.20.15", "v1.33.13", "v1.36.3", "v1.37.2"),
    ),
    Profile(
        "service/proxier-health/healthy-after-sync",
        "How does /healthz write lastUpdated?",
        (Era(None, "v1.33.0", "go-time-string",
             "fmt %q of a time.Time: '2006-01-02 15:04:05.999999999 -0700 MST m=+1.5'"),
         Era("v1.33.0", None, "rfc3339",
             "the body is a JSON-encoded struct (per-family health added): RFC 3339 times")),
        "https://github.com/kubernetes/kubernetes/pull/129271",
        ("v1.31.14", "v1.33.13", "v1.36.3", "v1.37.2"),
    ),
)}


def profile(behaviour: str) -> Profile:
    try:
        return PROFILES[behaviour]
    except KeyError:
        raise KeyError(f"no era profile for {behaviour!r}; known: {', '.join(sorted(PROFILES))}") from None


def expectation(behaviour: str, release: str | None) -> str:
    """What ``release`` of kube-proxy does for ``behaviour`` (today's rule for None)."""
    p = profile(behaviour)
    if release is None:
        return p.today
    for era in p.eras:
        if era.covers(release):
            return era.expect
    return p.today


def describe(behaviour: str, release: str | None) -> str:
    """One line for a failure message: the rule applied and why."""
    p = profile(behaviour)
    want = expectation(behaviour, release)
    era = next((e for e in p.eras if e.expect == want), p.eras[-1])
    span = (f"releases {era.since or 'before'}{' to ' + era.until if era.until else ' and later'}"
            if era.since else f"releases before {era.until}")
    who = f"kube-proxy {release}" if release else "today's kube-proxy"
    return f"era profile ({who}): {p.question} -> {want} ({span}: {era.why}; {p.link})"
