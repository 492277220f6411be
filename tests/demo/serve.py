"""The demo's inference "image": a SageMaker serving container in a few lines of the standard
library. The simulator runs it as `<this script> serve` with the model archive the train job
wrote extracted into /opt/ml/model, and SAGEMAKER_BIND_TO_PORT; it answers /ping, and
/invocations with what the trained model file says."""
import http.server
import json
import os

MODEL = open("/opt/ml/model/answer.txt").read().strip()


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.end_headers()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        rows = body.get("rows", [])
        out = json.dumps({"model": MODEL, "predictions": [0.5 for _ in rows]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        print("serve:", *args, flush=True)


http.server.HTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
