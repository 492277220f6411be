"""The churn API: forwards scoring requests to the stable SageMaker endpoint."""

import http.server
import os

ENDPOINT = os.environ.get("CHURN_ENDPOINT", "churn-model-stable")


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = f"churn api, scoring with {ENDPOINT}\n".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


http.server.HTTPServer(("0.0.0.0", 8080), Handler).serve_forever()
