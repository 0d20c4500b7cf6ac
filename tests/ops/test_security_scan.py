"""The security scan of what operators deploy: checkov finds nothing in either rendered overlay or
in the Dockerfile, skips exactly the checks deploy/README.md justifies, and does flag a plainly
unsafe pod and image, so a green scan means something. Offline: no API key, nothing downloaded."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
CHECKOV = Path(sys.executable).parent / "checkov"
# No platform credentials reach checkov, and it neither asks PyPI for a newer release nor
# downloads the check-id mapping; --skip-download below covers policies and guidelines.
ENVIRONMENT = {
    name: value
    for name, value in os.environ.items()
    if not name.startswith(("BC_", "PRISMA_", "CKV_", "CHECKOV_"))
} | {"CKV_SKIP_PACKAGE_UPDATE_CHECK": "true", "BC_SKIP_MAPPING": "true"}


def justified_skips() -> set[str]:
    """The check ids in the table of deploy/README.md's "Security scan" section."""
    readme = (ROOT / "deploy" / "README.md").read_text()
    section = readme.split("## Security scan", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| (CKV\w+)", section, flags=re.MULTILINE))


def render(overlay: str, directory: Path) -> Path:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed (Debian package kubectl; make test installs it)"
    manifest = directory / f"{overlay}.yaml"
    manifest.write_text(
        subprocess.run(
            [kubectl, "kustomize", str(ROOT / "deploy" / "overlays" / overlay)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    return manifest


class Scan:
    """One checkov run over ``files`` together, started at once so that runs overlap."""

    def __init__(self, directory: Path, name: str, *files: Path) -> None:
        command = [str(CHECKOV), "--skip-download", "--output", "json"]
        command += ["--framework", "kubernetes", "dockerfile"]
        for file in files:
            command += ["--file", str(file)]
        self.stdout, self.stderr = directory / f"{name}.json", directory / f"{name}.log"
        with self.stdout.open("w") as out, self.stderr.open("w") as err:
            self.process = subprocess.Popen(command, stdout=out, stderr=err, env=ENVIRONMENT)

    def reports(self) -> list[dict[str, Any]]:
        """checkov's JSON report, one entry per framework."""
        # Exit status 1 only means failed checks; a crash leaves output that is not a report.
        status = self.process.wait()
        try:
            report = json.loads(self.stdout.read_text())
        except json.JSONDecodeError:
            log = self.stderr.read_text()[-3000:]
            pytest.fail(f"checkov exited {status} without a report:\n{log}")
        return report if isinstance(report, list) else [report]


def failed(reports: list[dict[str, Any]]) -> list[str]:
    return [
        f"{check['check_id']} {check['resource']} {Path(check['file_path']).resolve()}"
        f":{'-'.join(map(str, check['file_line_range']))} ({check['check_name']})"
        for report in reports
        for check in report["results"].get("failed_checks", [])
    ]


def write_unsafe(directory: Path) -> tuple[Path, Path]:
    """A privileged root pod on the host network, and an image that runs as root unchecked."""
    pod = directory / "unsafe-pod.yaml"
    pod.write_text(
        "apiVersion: v1\n"
        "kind: Pod\n"
        "metadata: {name: unsafe}\n"
        "spec:\n"
        "  hostNetwork: true\n"
        "  containers:\n"
        "    - name: app\n"
        "      image: example/app:latest\n"
        "      securityContext: {privileged: true, runAsUser: 0}\n"
    )
    dockerfile = directory / "Dockerfile"
    dockerfile.write_text("FROM python:3.11-slim\nADD . /app\nCMD python /app/main.py\n")
    return pod, dockerfile


@pytest.fixture(scope="module")
def scans(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Scan]]:
    # One overlay per run: checkov matches NetworkPolicies to pods across all the files it is
    # given, whatever their namespace. The runs overlap; checkov's start-up is most of each.
    directory = tmp_path_factory.mktemp("checkov")
    started = {
        "dev": Scan(directory, "dev", render("dev", directory), DOCKERFILE),
        "prod": Scan(directory, "prod", render("prod", directory), DOCKERFILE),
        "unsafe": Scan(directory, "unsafe", *write_unsafe(directory)),
    }
    yield started
    for scan in started.values():  # none left running when a test stopped early
        scan.process.kill()
        scan.process.wait()


@pytest.mark.parametrize("overlay", ["dev", "prod"])
def test_the_deployed_manifests_and_image_pass_the_scan(
    overlay: str, scans: dict[str, Scan]
) -> None:
    reports = scans[overlay].reports()
    assert {r["check_type"] for r in reports} == {"kubernetes", "dockerfile"}
    for report in reports:
        assert report["summary"]["parsing_errors"] == 0, report["check_type"]
        assert report["summary"]["resource_count"] > 0, report["check_type"]
        assert report["summary"]["passed"] > 0, report["check_type"]
    problems = failed(reports)
    assert not problems, "checkov failed checks:\n" + "\n".join(problems)
    skipped = {
        check["check_id"] for report in reports for check in report["results"]["skipped_checks"]
    }
    assert skipped == justified_skips(), "every skip, and only those, is justified in the README"


def test_an_unsafe_pod_and_image_fail_the_scan(scans: dict[str, Scan]) -> None:
    found = {problem.split()[0] for problem in failed(scans["unsafe"].reports())}
    expected = {
        "CKV_K8S_16",  # privileged container
        "CKV_K8S_19",  # host network
        "CKV_K8S_21",  # default namespace
        "CKV_K8S_23",  # may run as root
        "CKV_DOCKER_2",  # no HEALTHCHECK
        "CKV_DOCKER_3",  # no non-root USER
    }
    assert expected <= found, sorted(found)
