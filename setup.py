"""What the wheel holds beyond the three Python packages (the metadata is in pyproject.toml).

The suite itself, as package data under ``svc_conformance_suite/`` (``harness/suite.py``
finds it there when the harness is installed, and in the repository otherwise): the
conformance checks, the scenario library with its dumps, the known-gaps files and the Go
module that builds real kube-proxy. The layout under it is the repository's, so pytest
collects the same node ids and behaviour ids from an installed wheel as from a checkout.
"""

from pathlib import Path

from setuptools import find_packages, setup

SUITE = "svc_conformance_suite"
# package under SUITE -> (directory in the repository, data files of it and its subdirectories)
SUITE_DATA = {
    "conformance": ("conformance", []),  # test modules: Python, the package's own modules
    "scenarios": ("scenarios", ["*.yaml", "*.yml"]),
    "known_gaps": ("known-gaps", ["*.yaml"]),
    "gobuild": ("gobuild", ["go.mod", "go.sum", "*.go"]),
}
HERE = Path(__file__).parent

packages = find_packages(include=["harness*", "refproxier*", "servicemodel*"])
package_dir, package_data = {}, {}
for name, (directory, files) in SUITE_DATA.items():
    package_dir[f"{SUITE}.{name}"] = directory
    # every subdirectory is a (data) package of its own: scenarios/bugs/dumps, gobuild/cmd/etcd
    for sub in sorted([HERE / directory, *(HERE / directory).rglob("*/")]):
        if sub.is_dir() and "__pycache__" not in sub.parts:
            pkg = ".".join([SUITE, name, *sub.relative_to(HERE / directory).parts])
            packages.append(pkg)
            if files:
                package_data[pkg] = files

# pytest's configuration for runs of the installed suite (harness/cli.py)
package_data["harness"] = ["suite.ini"]

setup(packages=packages, package_dir=package_dir, package_data=package_data)
