"""Trains the churn model: logistic regression by gradient descent on every CSV file of
--data, one `epoch=N loss=L accuracy=A` line per epoch (the job's metric definitions read
them), the weights into --model-dir, a short report into --report."""

import argparse
import json
import math
from pathlib import Path

from churn.features import load, predict

parser = argparse.ArgumentParser()
parser.add_argument("--data", required=True)
parser.add_argument("--model-dir", required=True)
parser.add_argument("--report", required=True)
parser.add_argument("--epochs", type=int, default=5)
args = parser.parse_args()

rows = load(args.data)
if not rows:
    raise SystemExit(f"no training rows in {args.data}")
weights = [0.0] * len(rows[0][0])
for epoch in range(1, args.epochs + 1):
    for _ in range(40):
        grad = [0.0] * len(weights)
        for x, y in rows:
            err = predict(weights, x) - y
            grad = [g + err * v for g, v in zip(grad, x)]
        weights = [w - 2.0 * g / len(rows) for w, g in zip(weights, grad)]
    loss = -sum(math.log(max(1e-9, predict(weights, x) if y else 1 - predict(weights, x))) for x, y in rows) / len(rows)
    accuracy = sum((predict(weights, x) >= 0.5) == bool(y) for x, y in rows) / len(rows)
    print(f"epoch={epoch} loss={loss:.4f} accuracy={accuracy:.4f}", flush=True)

model_dir = Path(args.model_dir)
model_dir.mkdir(parents=True, exist_ok=True)
(model_dir / "model.json").write_text(json.dumps({"weights": weights, "rows": len(rows)}))
report = Path(args.report)
report.parent.mkdir(parents=True, exist_ok=True)
report.write_text(f"rows={len(rows)} accuracy={accuracy:.4f} loss={loss:.4f}\n")
print(f"trained on {len(rows)} rows", flush=True)
