"""``pytest -m gpu`` collects on a machine without the ``serve`` extra (the bare GPU machine):
the server's test modules skip, naming the missing module, instead of failing to import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# pytest in a child whose imports of the serve extra's packages fail as on a machine without them
WITHOUT_SERVE = """
import sys, pytest
MISSING = {"fastapi", "starlette", "pydantic", "pydantic_core", "uvicorn", "prometheus_client", "grpc_health"}
class Missing:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in MISSING:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None
sys.meta_path.insert(0, Missing())
sys.exit(pytest.main(sys.argv[1:]))
"""

SERVER_MODULES = ["tests/test_remote_loader.py", "tests/test_server_cli.py", "tests/test_server_config.py",
                  "tests/test_server_control_plane.py", "tests/test_server_leaks.py", "tests/test_server_requests.py",
                  "tests/test_server_stream.py"]


def test_gpu_selection_collects_without_the_serve_extra() -> None:
    proc = subprocess.run([sys.executable, "-c", WITHOUT_SERVE, "--collect-only", "-q", "-rs", "-m", "gpu",
                           "-p", "no:cacheprovider", *SERVER_MODULES],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 5, output  # nothing left to run, and no collection error
    assert "error" not in output.lower(), output
    skipped = [line for line in output.splitlines() if line.startswith("SKIPPED [")]
    assert sum(int(line.split("[")[1].split("]")[0]) for line in skipped) == len(SERVER_MODULES), output
    assert any("needs grpcio-health-checking (the serve extra)" in line for line in skipped)
    assert any("needs fastapi (the serve extra)" in line for line in skipped)  # its own check comes first
