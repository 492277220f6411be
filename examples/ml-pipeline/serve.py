"""The model's serving container (the training image serves, as SageMaker framework images
do): started as `serve` with the model archive extracted into /opt/ml/model and
SAGEMAKER_BIND_TO_PORT set; answers /ping, and /invocations with churn probabilities for
{"rows": [[tenure_months, monthly_charges, support_calls], ...]}."""

import http.server
import json
import math
import os

MODEL = json.load(open("/opt/ml/model/model.json"))


def probability(row):
    tenure, charges, calls = (float(v) for v in row)
    x = [1.0, min(tenure / 72.0, 1.0), min(charges / 120.0, 1.0), min(calls / 10.0, 1.0)]
    z = sum(w * v for w, v in zip(MODEL["weights"], x))
    return round(1.0 / (1.0 + math.exp(-z)), 4)


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200 if self.path == "/ping" else 404)
        self.end_headers()

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")
        out = json.dumps({"predictions": [probability(r) for r in body.get("rows", [])]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        print("serve:", *args, flush=True)


http.server.HTTPServer(("127.0.0.1", int(os.environ["SAGEMAKER_BIND_TO_PORT"])), Handler).serve_forever()
