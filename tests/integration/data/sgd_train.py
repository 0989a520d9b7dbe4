"""Trains a logistic-regression classifier with SGD on a CSV (features..., label),
one pass per epoch, and reports loss and accuracy per epoch through EPF_METRICS_FILE."""
import argparse, csv, json, os, pathlib, sys
import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss

ap = argparse.ArgumentParser()
ap.add_argument("--input-path", required=True)
ap.add_argument("--output-path", required=True)
ap.add_argument("--epochs", type=int, default=5)
ap.add_argument("--learning-rate", type=float, default=0.01)
ap.add_argument("--fail", default="false")
a = ap.parse_args()
if a.fail == "true":
    sys.exit("failing on purpose")
src = pathlib.Path(a.input_path)
files = sorted(src.glob("*.csv")) if src.is_dir() else [src]
rows = [r for f in files for r in csv.reader(open(f)) if r and not r[0].startswith("x")]
data = np.array(rows, dtype=float)
X, y = data[:, :-1], data[:, -1].astype(int)
clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=a.learning_rate, random_state=0)
out = pathlib.Path(a.output_path)
out.mkdir(parents=True, exist_ok=True)
history = []
metrics_file = os.environ.get("EPF_METRICS_FILE")
for epoch in range(1, a.epochs + 1):
    clf.partial_fit(X, y, classes=np.unique(y))
    p = clf.predict_proba(X)
    history.append({"epoch": epoch, "loss": float(log_loss(y, p)),
                    "accuracy": float(accuracy_score(y, clf.predict(X)))})
    if metrics_file:
        tmp = metrics_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(history, f)
        os.replace(tmp, metrics_file)
(out / "model.json").write_text(json.dumps({"coef": clf.coef_.tolist(), "intercept": clf.intercept_.tolist()}))
print("trained", a.epochs, "epochs, final accuracy", history[-1]["accuracy"])
