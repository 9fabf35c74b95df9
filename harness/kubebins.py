"""Real Kubernetes binaries (kube-proxy, kube-apiserver, etcd) built from their Go modules.

``gobuild/`` is a small Go main module that requires ``k8s.io/kubernetes`` at the pinned
release and pins each staging module (``k8s.io/api``, ``k8s.io/client-go``, ...) with a
``replace`` line, because k/k's own go.mod points them at ``./staging`` and so refuses
``go install k8s.io/kubernetes/cmd/kube-proxy@vX``. Any other release is built from a copy
of that module rewritten for it (the staging list comes from that release's go.mod).

Builds land in a cache outside git: ``$SVC_CONFORMANCE_CACHE`` or
``~/.cache/svc-conformance``, as ``kube/<version>/bin/<component>`` with a ``build.json``
beside them (build seconds, binary sizes, Go version). Building is idempotent: a binary
that is already there is not built again.

    python -m harness.kubebins build                    # the pinned versions, kube-proxy
    python -m harness.kubebins build v1.33.13 --component kube-proxy,kube-apiserver,etcd
    python -m harness.kubebins path kube-proxy v1.37.2  # where it is (exit 1: not built)
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from harness.suite import locate as locate_suite

#: the release built by default and used when ``--kube-proxy-version`` is not given
DEFAULT_VERSION = "v1.37.2"
#: the releases ``build`` makes when none is named: the newest served, and 1.33 (nftables GA)
PINNED_VERSIONS = ("v1.37.2", "v1.33.13")
COMPONENTS = {
    "kube-proxy": "k8s.io/kubernetes/cmd/kube-proxy",
    "kube-apiserver": "k8s.io/kubernetes/cmd/kube-apiserver",
    "etcd": "./cmd/etcd",
}
#: gobuild/, in the repository or in the installed wheel (harness.suite)
MODULE_DIR = locate_suite().gobuild
_VERSION_RE = re.compile(r"^v1\.(\d+)\.(\d+)(?:-(alpha|beta|rc)\.(\d+))?$")
_PRE_RANK = {"alpha": 0, "beta": 1, "rc": 2}  # a release (no suffix) ranks 3: after its rcs
_STAGING_RE = re.compile(r"^\s*(?:replace\s+)?(k8s\.io/[-a-z0-9]+)\s+=>\s+\./staging/", re.M)


class BuildError(RuntimeError):
    """A binary could not be built or found; the message says what to do."""


@dataclass(frozen=True, order=True)
class Version:
    """A Kubernetes release as ``v1.MINOR.PATCH``, or a pre-release ``v1.MINOR.PATCH-beta.N``
    (ordered: v1.9.0 < v1.19.16 < v1.38.0-alpha.1 < v1.38.0-beta.0 < v1.38.0)."""

    minor: int
    patch: int
    pre_rank: int = 3
    pre_num: int = 0

    @classmethod
    def parse(cls, text: str) -> Version:
        m = _VERSION_RE.match(text.strip())
        if not m:
            raise BuildError(f"{text!r} is not a Kubernetes release version; write it as v1.MINOR.PATCH "
                             f"(e.g. {DEFAULT_VERSION})")
        rank = _PRE_RANK[m.group(3)] if m.group(3) else 3
        return cls(int(m.group(1)), int(m.group(2)), rank, int(m.group(4) or 0))

    @property
    def pre(self) -> str:
        """The pre-release suffix ("-beta.0"), "" for a release."""
        if self.pre_rank == 3:
            return ""
        kind = next(k for k, r in _PRE_RANK.items() if r == self.pre_rank)
        return f"-{kind}.{self.pre_num}"

    def __str__(self) -> str:
        return f"v1.{self.minor}.{self.patch}{self.pre}"

    @property
    def staging(self) -> str:
        """The staging modules' version for this release (v1.37.2 -> v0.37.2)."""
        return f"v0.{self.minor}.{self.patch}{self.pre}"


def cache_root() -> Path:
    base = os.environ.get("SVC_CONFORMANCE_CACHE")
    if base:
        return Path(base)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "svc-conformance"


def version_dir(version: str) -> Path:
    return cache_root() / "kube" / str(Version.parse(version))


def binary_path(component: str, version: str) -> Path:
    if component not in COMPONENTS:
        raise BuildError(f"unknown component {component!r}; known: {', '.join(COMPONENTS)}")
    return version_dir(version) / "bin" / component


def built_versions(component: str = "kube-proxy") -> list[str]:
    """Releases with ``component`` in the cache, oldest first."""
    root = cache_root() / "kube"
    if not root.is_dir():
        return []
    found = []
    for d in root.iterdir():
        if _VERSION_RE.match(d.name) and (d / "bin" / component).is_file():
            found.append(Version.parse(d.name))
    return [str(v) for v in sorted(found)]


def locate(component: str, version: str) -> Path:
    """The built binary, or a ``BuildError`` saying how to build it."""
    path = binary_path(component, version)
    if not path.is_file():
        raise BuildError(
            f"{component} {version} is not built (looked for {path}); build it with: "
            f".venv/bin/python -m harness.kubebins build {version} --component {component}")
    return path


IPTABLES_TOOLS = ("iptables", "iptables-save", "iptables-restore",
                  "ip6tables", "ip6tables-save", "ip6tables-restore")


def iptables_shims() -> Path:
    """A directory with ``nft/`` and ``legacy/`` subdirectories of links named ``iptables``,
    ``iptables-restore``, ... to that flavour's tools: put first on a real binary's PATH, it
    makes the binary use the flavour (kube-proxy runs plain ``iptables``)."""
    root = cache_root() / "iptables-shims"
    for flavour in ("nft", "legacy"):
        d = root / flavour
        d.mkdir(parents=True, exist_ok=True)
        for tool in IPTABLES_TOOLS:
            target = shutil.which(tool.replace("tables", f"tables-{flavour}", 1))
            link = d / tool
            if target is None:
                continue  # the doctor names the missing package; the binary then fails clearly
            if link.is_symlink() and os.readlink(link) == target:
                continue
            tmp = d / f".{tool}.tmp"
            tmp.unlink(missing_ok=True)
            tmp.symlink_to(target)
            tmp.rename(link)
    return root


def staging_modules(k8s_gomod: str) -> list[str]:
    """The staging modules a k8s.io/kubernetes go.mod points at ``./staging``."""
    return sorted(set(_STAGING_RE.findall(k8s_gomod)))


_PIN_RE = re.compile(r"^\s*(?:replace\s+)?([^\s=]+)(?:\s+v[^\s=]+)?\s+=>\s+([^\s.][^\s]*)\s+(v\S+)\s*$", re.M)

#: Modules whose version pinned by an old release cannot work with today's Go, and the
#: oldest version that does. github.com/modern-go/reflect2 v1.0.1 (Kubernetes <= 1.22)
#: reads the runtime's map iterator layout, which Go 1.18 changed: the binary builds and
#: then crashes in json-iterator (modern-go/reflect2#23, fixed in v1.0.2).
COMPAT_MINIMUMS = {"github.com/modern-go/reflect2": "v1.0.2"}
#: Dependencies of old releases whose home is gone and whose versions the module proxy no
#: longer serves (403), and the same code at its new home. vbom.ml/util (kubectl <= 1.19)
#: moved to github.com/fvbommel/util.
COMPAT_MOVED = {"vbom.ml/util": "github.com/fvbommel/util"}
#: how many older patch releases of a staging module are tried when the module proxy does
#: not serve the release's own (then the line's first release, .0)
STAGING_FALLBACK_TRIES = 4


def pinned_replaces(k8s_gomod: str) -> dict[str, tuple[str, str]]:
    """A release's own version pins (``X => Y vN`` replace lines that are not ``./staging``):
    k/k up to 1.2x pins every dependency this way, and only the main module's replaces
    count, so the wrapper must repeat them to build what the release built."""
    out = {}
    for mod, target, ver in _PIN_RE.findall(k8s_gomod):
        if not target.startswith("./"):
            out[mod] = (target, ver)
    return out


def _semver_key(v: str) -> tuple:
    m = re.match(r"v(\d+)\.(\d+)\.(\d+)", v)
    return tuple(int(x) for x in m.groups()) if m else (0, 0, 0)


def render_gomod(template: str, version: Version, staging: list[str],
                 pins: dict[str, tuple[str, str]] | None = None,
                 staging_versions: dict[str, str] | None = None) -> str:
    """``template`` (gobuild/go.mod) rewritten to require ``version`` and pin its staging
    modules (at ``staging_versions`` where given, else the release's), and ``pins``, the
    release's own replace pins, raised to ``COMPAT_MINIMUMS`` and moved per ``COMPAT_MOVED``;
    the requirement list below is left to ``go mod tidy``."""
    lines = [f"module {_module_name(template)}", "", f"go {_go_directive(template)}", "",
             f"require k8s.io/kubernetes {version}", ""]
    sv = staging_versions or {}
    lines += [f"replace {m} => ./stubs/{m}" if sv.get(m) == STUB else
              f"replace {m} => {m} {sv.get(m, version.staging)}" for m in staging]
    pins = dict(pins or {})
    for mod, floor in COMPAT_MINIMUMS.items():
        if mod in pins and _semver_key(pins[mod][1]) < _semver_key(floor):
            pins[mod] = (mod, floor)
    for mod, home in COMPAT_MOVED.items():
        if mod in pins and pins[mod][0] == mod:
            pins[mod] = (home, pins[mod][1])
    lines += [f"replace {m} => {t} {v}" for m, (t, v) in sorted(pins.items()) if m not in staging]
    return "\n".join(lines) + "\n"


def tools_go(components: list[str]) -> str:
    """gobuild/tools.go naming only ``components`` (the Kubernetes commands among them)."""
    imports = "".join(f'\t_ "{COMPONENTS[c]}"\n' for c in components if COMPONENTS[c].startswith("k8s.io/"))
    return ("//go:build tools\n\n// Package gobuild: the commands built for this release "
            "(written by harness/kubebins.py).\npackage gobuild\n\n"
            + (f"import (\n{imports})\n" if imports else ""))


def _module_name(gomod: str) -> str:
    m = re.search(r"^module\s+(\S+)", gomod, re.M)
    if not m:
        raise BuildError(f"{MODULE_DIR / 'go.mod'} has no module line")
    return m.group(1)


def _go_directive(gomod: str) -> str:
    m = re.search(r"^go\s+(\S+)", gomod, re.M)
    return m.group(1) if m else "1.24"


def _go() -> str:
    go = shutil.which("go")
    if go is None:
        raise BuildError("the Go toolchain is not on PATH: install Go 1.24 or newer (Debian: "
                         "golang-go is too old for Kubernetes 1.33+; use a go.dev release), "
                         "then run the build again")
    return go


def _run(argv: list[str], cwd: Path, what: str, env: dict[str, str]) -> None:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-25:])
        hint = ""
        if "proxy.golang.org" in tail or "dial tcp" in tail or "lookup" in tail:
            hint = ("\nThe Go module proxy could not be reached: check GOPROXY "
                    f"({env.get('GOPROXY') or 'default'}) and the network.")
        if "unknown revision" in tail or "invalid version" in tail:
            hint = "\nThe module proxy does not serve that release: pick one it lists (go list -m -versions k8s.io/kubernetes)."
        raise BuildError(f"{what} failed ({' '.join(argv)} in {cwd}):\n{tail}{hint}")


def _k8s_gomod(version: Version, env: dict[str, str]) -> str:
    proc = subprocess.run([_go(), "mod", "download", "-json", f"k8s.io/kubernetes@{version}"],
                          capture_output=True, text=True, env=env)
    try:
        info = json.loads(proc.stdout or "{}")
    except json.JSONDecodeError:
        info = {}
    if proc.returncode != 0 or "GoMod" not in info:
        err = info.get("Error") or proc.stderr.strip()
        raise BuildError(f"could not download k8s.io/kubernetes@{version} from the Go module "
                         f"proxy: {err}")
    return Path(info["GoMod"]).read_text()


def _unserved(modules: list[str], env: dict[str, str]) -> dict[str, str]:
    """Which of ``modules`` (``path@version``) the module proxy does not serve, with its
    error; one ``go mod download`` for all (it fetches what the build needs anyway)."""
    proc = subprocess.run([_go(), "mod", "download", "-json", *modules], capture_output=True,
                          text=True, env=env)
    out: dict[str, str] = {}
    dec = json.JSONDecoder()
    text, i = proc.stdout, 0
    while True:
        while i < len(text) and text[i].isspace():
            i += 1
        if i >= len(text):
            break
        info, i = dec.raw_decode(text, i)
        if info.get("Error"):
            out[f"{info.get('Path')}@{info.get('Version')}"] = info["Error"].splitlines()[-1]
    return out


def staging_fallbacks(staging: list[str], version: Version, env: dict[str, str],
                      log=print) -> dict[str, str]:
    """Staging modules the module proxy does not serve at the release's own version
    (it answers some with 403 "not available"), each with the nearest older patch of the
    same line that it serves (a staging module's patch releases of one line carry the same
    API types). Raises BuildError when none is served."""
    missing = [m for m in _unserved([f"{m}@{version.staging}" for m in staging], env)]
    chosen: dict[str, str] = {}
    for mv in missing:
        mod = mv.split("@")[0]
        tries = [f"v0.{version.minor}.{p}" for p in range(version.patch - 1, -1, -1)][:STAGING_FALLBACK_TRIES]
        tries += [f"v0.{version.minor}.0"] if f"v0.{version.minor}.0" not in tries else []
        for cand in tries:
            if not _unserved([f"{mod}@{cand}"], env):
                chosen[mod] = cand
                log(f"kubebins: {version}: the module proxy does not serve {mod}@{version.staging}; "
                    f"using {cand}")
                break
        else:
            # Not served at any of these: an empty local module stands in for it. k/k's
            # go.mod requires every staging module, the build only those it imports (the
            # sample-* ones are never imported by kube-proxy); a needed one fails the
            # build with Go's "no required module provides package" naming it.
            chosen[mod] = STUB
            log(f"kubebins: {version}: the module proxy serves neither {mod}@{version.staging} nor "
                f"{', '.join(tries)}; an empty stand-in module is used (the build fails if it is imported)")
    return chosen


#: staging_fallbacks' value for a module replaced by an empty local stand-in
STUB = "stub"


def write_stubs(module_dir: Path, chosen: dict[str, str]) -> None:
    """The empty stand-in modules ``staging_fallbacks`` chose, under ``module_dir/stubs``."""
    for mod, ver in chosen.items():
        if ver == STUB:
            d = module_dir / "stubs" / mod
            d.mkdir(parents=True, exist_ok=True)
            (d / "go.mod").write_text(f"module {mod}\n\ngo 1.20\n")


def _ldflags(version: Version) -> str:
    # What k/k's hack/lib/version.sh stamps, so `kube-proxy --version` names the release.
    pkg = "k8s.io/component-base/version"
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    return " ".join([
        "-s", "-w",
        f"-X {pkg}.gitVersion={version}", f"-X {pkg}.gitMajor=1", f"-X {pkg}.gitMinor={version.minor}",
        f"-X {pkg}.gitTreeState=clean", f"-X {pkg}.buildDate={stamp}",
    ])


def build(version: str, components: list[str], log=print) -> dict[str, dict[str, float]]:
    """Build ``components`` of ``version`` into the cache (skipping those already built);
    returns per component the build seconds (0 when cached) and the binary size."""
    v = Version.parse(version)
    for c in components:
        if c not in COMPONENTS:
            raise BuildError(f"unknown component {c!r}; known: {', '.join(COMPONENTS)}")
    vdir = version_dir(str(v))
    todo = [c for c in components if not binary_path(c, str(v)).is_file()]
    results: dict[str, dict[str, float]] = {}
    if todo:
        go = _go()
        # A release whose go.mod needs a newer Go than the one installed (v1.38.0-beta.0 wants
        # go >= 1.27.0) gets it from the module proxy (golang.org/toolchain): GOTOOLCHAIN=auto
        # unless the caller chose a toolchain policy.
        env = {**os.environ, "GOFLAGS": "-mod=mod", "CGO_ENABLED": "0",
               "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN") or "auto"}
        mod = vdir / "module"
        if mod.exists():
            shutil.rmtree(mod)
        shutil.copytree(MODULE_DIR, mod, ignore=shutil.ignore_patterns("go.sum") if
                        str(v) != DEFAULT_VERSION else None)
        if str(v) != DEFAULT_VERSION:
            k8s_gomod = _k8s_gomod(v, env)
            staging = staging_modules(k8s_gomod)
            pins = pinned_replaces(k8s_gomod)
            substituted = staging_fallbacks(staging, v, env, log)
            (mod / "go.mod").write_text(render_gomod((MODULE_DIR / "go.mod").read_text(), v, staging, pins,
                                                     substituted))
            write_stubs(mod, substituted)
            (vdir).mkdir(parents=True, exist_ok=True)
            (vdir / "substitutions.json").write_text(json.dumps(substituted, indent=2) + "\n")
            # Only what is asked: etcd's module (cmd/etcd) and kube-apiserver would raise
            # shared dependencies above what an old release was built with.
            (mod / "tools.go").write_text(tools_go(todo))
            if "etcd" not in todo:
                shutil.rmtree(mod / "cmd" / "etcd", ignore_errors=True)
            log(f"kubebins: {v}: go mod tidy ({len(staging)} staging modules pinned at {v.staging}"
                + (f", {len(substituted)} of them at another patch or stubbed" if substituted else "")
                + f", {len(pins)} pinned dependencies)")
            _run([go, "mod", "tidy"], mod, f"go mod tidy for {v}", env)
        (vdir / "bin").mkdir(parents=True, exist_ok=True)
        for c in todo:
            log(f"kubebins: building {c} {v} (a few minutes on 2 cores)")
            start = time.monotonic()
            out = binary_path(c, str(v))
            tmp = out.with_suffix(".tmp")
            _run([go, "build", "-trimpath", "-ldflags", _ldflags(v), "-o", str(tmp), COMPONENTS[c]],
                 mod, f"building {c} {v}", env)
            tmp.rename(out)
            results[c] = {"seconds": round(time.monotonic() - start, 1)}
    record_path = vdir / "build.json"
    try:
        record = json.loads(record_path.read_text()) if record_path.is_file() else {}
    except json.JSONDecodeError:
        record = {}  # a record from a build killed mid-write: rewritten below
    record.setdefault("version", str(v))
    record.setdefault("components", {})
    subs = vdir / "substitutions.json"
    if subs.is_file() and json.loads(subs.read_text()):
        # staging modules built at another patch of the line (the module proxy lacks them)
        record["staging_substituted"] = json.loads(subs.read_text())
    for c in components:
        path = binary_path(c, str(v))
        entry = record["components"].setdefault(c, {})
        if c in results:
            entry["build_seconds"] = results[c]["seconds"]
            # in the module: the toolchain GOTOOLCHAIN=auto switched to, if it did
            entry["go"] = subprocess.run([_go(), "version"], capture_output=True, text=True,
                                         cwd=vdir / "module" if (vdir / "module").is_dir() else None,
                                         env={**os.environ, "GOTOOLCHAIN": os.environ.get("GOTOOLCHAIN") or "auto"}
                                         ).stdout.strip()
        entry["size_bytes"] = path.stat().st_size
        results.setdefault(c, {"seconds": 0.0})["size_bytes"] = entry["size_bytes"]
    vdir.mkdir(parents=True, exist_ok=True)
    # written aside and renamed: a concurrent build of the same release never reads half of it
    tmp_record = record_path.with_name(f".build.json.{os.getpid()}")
    tmp_record.write_text(json.dumps(record, indent=2) + "\n")
    tmp_record.replace(record_path)
    return results


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.kubebins",
                                 description="Build real Kubernetes binaries into the cache.")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build releases (default: the pinned ones)")
    b.add_argument("versions", nargs="*", help=f"releases, e.g. {DEFAULT_VERSION}")
    b.add_argument("--component", default="kube-proxy",
                   help=f"comma list of {', '.join(COMPONENTS)} (default kube-proxy)")
    p = sub.add_parser("path", help="print a built binary's path")
    p.add_argument("component", choices=sorted(COMPONENTS))
    p.add_argument("version", nargs="?", default=DEFAULT_VERSION)
    sub.add_parser("list", help="releases in the cache, with their build records")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            comps = [c.strip() for c in args.component.split(",") if c.strip()]
            summary = {}
            for version in args.versions or PINNED_VERSIONS:
                summary[version] = build(version, comps, log=lambda m: print(m, file=sys.stderr))
            print(json.dumps(summary))
        elif args.cmd == "path":
            print(locate(args.component, args.version))
        else:
            root = cache_root() / "kube"
            for d in sorted(root.glob("v1.*")) if root.is_dir() else []:
                rec = d / "build.json"
                print(d.name, rec.read_text().strip() if rec.is_file() else "{}")
    except BuildError as exc:
        print(f"kubebins: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
