"""What a dry run asks servers and looks for on the machine: /v1/models answers as vLLM and serve-grm give them,
the ways a probe fails, and the packages a config needs."""

from __future__ import annotations

import http.server
import threading
from contextlib import contextmanager

from fapo.train.launch_probes import probe_many, probe_models, required_packages, uses_deepspeed
from test_train_preflight import vllm_models


@contextmanager
def answering(status: int, body: bytes):
    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(status)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    finally:
        server.shutdown()
        server.server_close()


def test_a_vllm_answer_gives_names_aliases_and_context():
    with vllm_models("FAPO-GenRM-4B", 32768, root="/ckpt/fapo-genrm-4b") as url:
        served = probe_models(url + "/v1")
    assert served.error is None and served.names == ("FAPO-GenRM-4B", "/ckpt/fapo-genrm-4b")
    assert served.context == {"FAPO-GenRM-4B": 32768, "/ckpt/fapo-genrm-4b": 32768}
    assert served.max_tokens_limit is None


def test_each_way_a_probe_fails_is_one_reason():
    with answering(401, b'{"error": "no key"}') as denied, answering(200, b"<html>") as html, \
            answering(200, b'{"models": []}') as odd:
        answers = probe_many([(denied, None), (html, None), (odd, "k"), ("http://127.0.0.1:9/v1", None)], 2.0)
    assert [a.error.split(" at ")[0] if a.error.startswith("HTTP") else a.error.split(" (")[0] for a in answers] == [
        "HTTP 401", f"{html}/models did not answer JSON", f"{odd}/models has no 'data' list", "unreachable"]


def test_the_packages_a_config_needs():
    trl = {"report_to": ["wandb", "tensorboard"], "use_vllm": True}
    needed = required_packages(trl, {"distributed_type": "DEEPSPEED"}, use_vllm=True)
    assert needed == [(("deepspeed",), "the accelerate config's distributed_type: DEEPSPEED"),
                      (("wandb",), "report_to: wandb"), (("tensorboard", "tensorboardX"), "report_to: tensorboard"),
                      (("vllm",), "use_vllm: true")]
    assert required_packages({"report_to": "none"}, {"distributed_type": "MULTI_GPU"}, use_vllm=False) == []
    assert uses_deepspeed({"deepspeed": "ds.json"}, None) == "the config's deepspeed key"
