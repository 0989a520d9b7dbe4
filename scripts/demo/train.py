"""The demo's processor: a linear classifier trained with SGD on the iris CSV, one pass
per epoch, reporting loss, accuracy and held-out accuracy per epoch through the metrics
file reef-epf watches (EPF_METRICS_FILE), and writing the model to the output folder."""
import argparse
import csv
import json
import os
import pathlib

import numpy as np
from sklearn.linear_model import SGDClassifier
from sklearn.metrics import accuracy_score, log_loss
from sklearn.preprocessing import StandardScaler

FEATURES = ("sepal_length", "sepal_width", "petal_length", "petal_width")

ap = argparse.ArgumentParser()
ap.add_argument("--input-path", required=True)
ap.add_argument("--output-path", required=True)
ap.add_argument("--epochs", type=int, default=10)
ap.add_argument("--learning-rate", type=float, default=0.01)
a = ap.parse_args()

src = pathlib.Path(a.input_path)
files = sorted(src.glob("*.csv")) if src.is_dir() else [src]
rows = [r for f in files for r in csv.DictReader(open(f))]
X = StandardScaler().fit_transform(np.array([[float(r[k]) for k in FEATURES] for r in rows]))
y = np.array([r["species"] for r in rows])
order = np.random.default_rng(0).permutation(len(y))
cut = int(len(y) * 0.8)
tr, te = order[:cut], order[cut:]
classes = np.unique(y)
clf = SGDClassifier(loss="log_loss", learning_rate="constant", eta0=a.learning_rate,
                    random_state=0)
history = []
metrics_file = os.environ.get("EPF_METRICS_FILE")
for epoch in range(1, a.epochs + 1):
    clf.partial_fit(X[tr], y[tr], classes=classes)
    history.append({
        "epoch": epoch,
        "loss": round(float(log_loss(y[tr], clf.predict_proba(X[tr]), labels=classes)), 4),
        "accuracy": round(float(accuracy_score(y[tr], clf.predict(X[tr]))), 4),
        "val_accuracy": round(float(accuracy_score(y[te], clf.predict(X[te]))), 4),
    })
    print(f"epoch {epoch}: {history[-1]}", flush=True)
    if metrics_file:
        tmp = metrics_file + ".tmp"
        with open(tmp, "w") as f:
            json.dump(history, f)
        os.replace(tmp, metrics_file)
out = pathlib.Path(a.output_path)
out.mkdir(parents=True, exist_ok=True)
(out / "model.json").write_text(json.dumps({
    "classes": classes.tolist(), "features": FEATURES, "coef": clf.coef_.tolist(),
    "intercept": clf.intercept_.tolist()}, indent=1))
print("trained", a.epochs, "epochs; held-out accuracy", history[-1]["val_accuracy"])
