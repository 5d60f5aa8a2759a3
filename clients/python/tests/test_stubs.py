import subprocess
import sys

from conftest import REPO


def test_committed_stubs_match_the_proto():
    tool = REPO / "clients/python/tools/generate_stubs.py"
    r = subprocess.run([sys.executable, str(tool), "--check"], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
