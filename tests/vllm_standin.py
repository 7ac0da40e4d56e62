"""Test helper: a stand-in for `python -m vllm.entrypoints.openai.api_server`, to test the launcher's process
handling (readiness, the listening line, forwarded options, stopping the whole process group, a start-up
crash) in a second, without vLLM. `make_vllm_python(dir, mode)` writes an executable that answers the
launcher's `-c "import vllm..."` check and runs this file for `-m vllm...`. Modes: "serve" (an engine child
in the same process group, /health after a short delay), "crash" (an error during start-up).
Real vLLM is tested in tests/test_serving_vllm.py when `make vllm` has been run.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def make_vllm_python(directory: Path, mode: str) -> Path:
    """An executable standing in for a Python with vLLM; it records its argv and engine pid in `directory`."""
    script = directory / "python-with-vllm"
    script.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-c" ]; then exit 0; fi  # the find_spec check\n'
        f'exec "{sys.executable}" "{Path(__file__).resolve()}" "{mode}" "{directory}" "$@"\n'
    )
    script.chmod(0o755)
    return script


def main(mode: str, directory: str, *argv: str) -> None:
    out = Path(directory)
    (out / "argv.json").write_text(json.dumps(list(argv)))
    print("INFO stand-in vLLM starting", flush=True)
    if mode == "crash":
        print("ValueError: stand-in cannot load this model", flush=True)
        sys.exit(1)
    engine = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])  # same process group
    (out / "engine.pid").write_text(str(engine.pid))
    time.sleep(1.0)  # not ready at once, as vLLM is not
    port = int(argv[argv.index("--port") + 1])

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    http.server.HTTPServer((argv[argv.index("--host") + 1], port), Health).serve_forever()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main(*sys.argv[1:])
