"""The golden files of the rendered manifests (``tests/kubernetes/golden/``): what
``switchback k8s ...`` prints for a few fixed inputs. ``test_manifests.py`` fails on any
difference, with a unified diff. After an intended change, regenerate them and review the diff:

    .venv/bin/python -m tests.kubernetes.regen
"""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from switchback.cli.k8s import app

GOLDEN = Path(__file__).parent / "golden"
APP = str(Path(__file__).resolve().parents[2] / "examples" / "provision")
DIGEST = "registry.example.com/provision@sha256:" + "0123456789abcdef" * 4

# file -> `switchback k8s` arguments
CASES: dict[str, list[str]] = {
    "render-production-v1-current.yaml": [
        "render", APP, "--environment", "production", "--version", "v1", "--image", DIGEST,
        "--ingress-class", "nginx", "--host", "provision.example.com",
        "--standby-host", "standby.provision.example.com", "--tls-secret", "provision-tls",
    ],
    "render-production-v2-new.yaml": [
        "render", APP, "--environment", "production", "--version", "v2", "--slot", "new",
        "--image", DIGEST.replace("0123", "4567"), "--ingress-class", "nginx",
    ],
    "install.yaml": [
        "install", "--environment", "production", "--environment", "staging",
        "--image", "registry.example.com/switchback:0.1.0",
    ],
}  # fmt: skip


def produce(args: list[str]) -> str:
    result = CliRunner().invoke(app, args)
    if result.exit_code != 0:
        raise RuntimeError(
            f"switchback k8s {' '.join(args)}: exit {result.exit_code}\n{result.output}"
        )
    return result.stdout


def main() -> None:
    GOLDEN.mkdir(exist_ok=True)
    for name, args in CASES.items():
        (GOLDEN / name).write_text(produce(args), encoding="utf-8")
        print(f"wrote {GOLDEN / name}")


if __name__ == "__main__":
    main()
