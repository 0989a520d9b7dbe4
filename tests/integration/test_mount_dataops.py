"""Data pipelines (OPERATION processors) and visualizations (VISUALIZATION processors)
through the mount, the same way as experiments: launch files validated against the
processor's manifest and journaled before write() returns, errors in `.error`, and a
real job on the hub's runner whose outputs are a new dataset version (the branch
data-pipeline/<name>, in branches/) or files (images, HTML, JSON) in the launch's
directory."""

import csv
import errno
import io
import json
import os
import re
import xml.etree.ElementTree as ET

from test_hub_ci import push_files
from test_hub_mgmt import MANIFEST, TRAIN_PY, V1, csv_data
from test_mount_mlops import FINISHED, wait_file, write_ctl

FILTER_PY = """import argparse, csv, os
p = argparse.ArgumentParser()
p.add_argument("--input-path", required=True)
p.add_argument("--output-path", required=True)
p.add_argument("--column", required=True)
p.add_argument("--min", type=float, required=True)
a = p.parse_args()
with open(os.path.join(a.input_path, "train.csv")) as f:
    rows = list(csv.DictReader(f))
keep = [r for r in rows if float(r[a.column]) >= a.min]
os.makedirs(a.output_path, exist_ok=True)
with open(os.path.join(a.output_path, "train.csv"), "w", newline="") as f:
    w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
    w.writeheader()
    w.writerows(keep)
print(f"kept {len(keep)} of {len(rows)} rows")
"""

PLOT_PY = """import argparse, csv, json, os
p = argparse.ArgumentParser()
p.add_argument("--input-path", required=True)
p.add_argument("--output-path", required=True)
p.add_argument("--title", default="histogram")
p.add_argument("--bins", type=int, default=4)
a = p.parse_args()
with open(os.path.join(a.input_path, "train.csv")) as f:
    xs = [float(r["x1"]) for r in csv.DictReader(f)]
lo, hi = min(xs), max(xs)
counts = [0] * a.bins
for x in xs:
    counts[min(a.bins - 1, int((x - lo) / (hi - lo) * a.bins))] += 1
os.makedirs(a.output_path, exist_ok=True)
bars = "".join(f'<rect x="{i * 20}" y="{100 - c}" width="18" height="{c}"/>'
               for i, c in enumerate(counts))
with open(os.path.join(a.output_path, "plot.svg"), "w") as f:
    f.write(f'<svg xmlns="http://www.w3.org/2000/svg" width="{a.bins * 20}" height="100">'
            f'<title>{a.title}</title>{bars}</svg>')
with open(os.path.join(a.output_path, "index.html"), "w") as f:
    f.write(f"<html><body><h1>{a.title}</h1><img src='plot.svg'></body></html>")
with open(os.path.join(a.output_path, "summary.json"), "w") as f:
    json.dump({"n": len(xs), "bins": counts}, f)
print("plotted", len(xs), "values")
"""

OPERATION = {
    "slug": "row-filter", "name": "Row filter", "type": "OPERATION",
    "command": "python3 filter.py", "input_data_type": "TABULAR",
    "output_data_type": "TABULAR",
    "parameters": [
        {"name": "column", "type": "STRING", "required": True},
        {"name": "min", "type": "FLOAT", "required": True},
    ],
}

VISUALIZATION = {
    "slug": "histogram", "name": "Histogram", "type": "VISUALIZATION",
    "command": "python3 plot.py",
    "parameters": [
        {"name": "title", "type": "STRING", "required": False, "default": "x1"},
        {"name": "bins", "type": "INTEGER", "required": False, "default": 4},
    ],
}


def make_dataops(hub, tmp_path, mount_factory):
    token = hub.user("alice")
    hub.project("alice/procs", "alice")
    hub.project("alice/cats", "alice")
    push_files(hub, token, "alice/procs", {
        "train.py": TRAIN_PY, "processor.json": json.dumps(MANIFEST),
        "filter.py": FILTER_PY, "op.json": json.dumps(OPERATION),
        "plot.py": PLOT_PY, "viz.json": json.dumps(VISUALIZATION)}, tmp_path)
    push_files(hub, token, "alice/cats", {"data/train.csv": csv_data(), "README.md": "cats\n"},
               tmp_path)
    api = V1(hub, token)
    for path in ("processor.json", "op.json", "viz.json"):
        r = api("POST", "/code-projects/alice%2Fprocs/publish", json={"ref": "main", "path": path})
        assert r.status_code == 201, r.text
    return token, api, mount_factory(hub, token)


def test_data_pipeline_makes_a_dataset_version(hub, tmp_path, mount_factory):
    token, api, m = make_dataops(hub, tmp_path, mount_factory)
    proj = m / "alice/cats"
    dps = proj / "data-pipelines"
    assert {"data-pipelines", "visualizations", "experiments"} <= set(os.listdir(proj))
    assert sorted(os.listdir(dps)) == ["launch", "launch.error"]
    # validated against the manifest before write() returns; the reason in .error
    cases = [
        ("processor=sgd-train\n", errno.EINVAL, "data-pipelines run OPERATION processors"),
        ("processor=histogram\n", errno.EINVAL, "data-pipelines run OPERATION processors"),
        ("processor=row-filter\ncolumn=label\n", errno.EINVAL, "min"),
        ("processor=row-filter\ncolumn=label\nmin=lots\n", errno.EINVAL, "min"),
        ("processor=row-filter\ncolumn=label\nmin=1\nnope=2\n", errno.EINVAL,
         "unknown parameter nope"),
        ("processor=nothing-like-it\n", errno.ENOENT, "unknown processor"),
        ("processor=row-filter\ncolumn=label\nmin=1\nsource_branch=nope\n", errno.ENOENT,
         "unknown branch nope"),
    ]
    for data, want, reason in cases:
        err, back = write_ctl(dps / "launch", data)
        assert err == want, (data, err, back)
        assert reason in back, (reason, back)
        assert reason in (dps / "launch.error").read_text()
    assert api("GET", "/projects/alice%2Fcats/data-pipelines").json() == []
    # a good one: journaled (the ticket), then run for real
    err, out = write_ctl(dps / "launch", "name=dp1\nprocessor=row-filter\ninput_path=data\n"
                                         "column=label\nmin=1\n")
    assert err == 0, out
    ticket = json.loads(out)
    assert ticket["kind"] == "data-pipeline" and ticket["target"] == "dp1"
    assert ticket["state"] in ("queued", "delivered")
    assert (dps / "launch.error").read_text() == ""
    seen = wait_file(dps / "dp1/status", FINISHED)
    assert seen[-1] == "success", ((dps / "dp1/log").read_text(), seen)
    assert sorted(os.listdir(dps / "dp1")) == sorted(
        ["data-pipeline.json", "status", "params.json", "log", "ctl", "ctl.error", "outputs",
         "artifacts"])
    d = json.loads((dps / "dp1/data-pipeline.json").read_text())
    assert d["kind"] == "data-pipeline" and d["branch"] == "data-pipeline/dp1"
    assert d["processor"]["slug"] == "row-filter"
    assert d["request_id"] == ticket["key"]  # the run carries the request's id
    # typed as the manifest declares: min is a FLOAT
    assert json.loads((dps / "dp1/params.json").read_text()) == {"column": "label", "min": 1.0}
    assert "kept" in (dps / "dp1/log").read_text()
    src = list(csv.DictReader(io.StringIO(csv_data())))
    want = [r for r in src if float(r["label"]) >= 1]
    got = list(csv.DictReader(io.StringIO((dps / "dp1/outputs/train.csv").read_text())))
    assert got == want and 0 < len(got) < len(src)
    # the new dataset version is a branch like any other
    assert "data-pipeline" in os.listdir(proj / "branches")
    assert "dp1" in os.listdir(proj / "branches/data-pipeline")
    version = proj / "branches/data-pipeline/dp1"
    assert (version / "output/train.csv").read_bytes() == (dps / "dp1/outputs/train.csv").read_bytes()
    assert (version / "data/train.csv").read_text() == csv_data()  # the source is kept
    assert os.getxattr(version / "output/train.csv", "user.reef.commit") == \
        os.getxattr(dps / "dp1/outputs/train.csv", "user.reef.commit")
    assert os.listdir(dps / "dp1/artifacts") == ["output"]
    assert (dps / "dp1/artifacts/output/train.csv").read_bytes() == \
        (version / "output/train.csv").read_bytes()
    # ctl works here too; experiments/ did not see any of it
    err, back = write_ctl(dps / "dp1/ctl", "explode\n")
    assert err == errno.EINVAL and "cancel or retry" in back
    assert sorted(os.listdir(proj / "experiments")) == ["launch", "launch.error"]
    # the processor's README tells where it launches
    assert "data-pipelines/launch" in (m / ".reef/processors/row-filter/README.md").read_text()


def test_visualization_outputs_are_files(hub, tmp_path, mount_factory):
    token, api, m = make_dataops(hub, tmp_path, mount_factory)
    viz = m / "alice/cats/visualizations"
    assert sorted(os.listdir(viz)) == ["launch", "launch.error"]
    err, back = write_ctl(viz / "launch", "processor=row-filter\n")
    assert err == errno.EINVAL and "visualizations run VISUALIZATION processors" in back
    err, back = write_ctl(viz / "launch", '{"processor": "histogram", "params": {"bins": 2.5}}')
    assert err == errno.EINVAL and "bins" in back
    # JSON form, no name: reefd names it after the processor and the request id
    err, out = write_ctl(viz / "launch", json.dumps(
        {"processor": "histogram", "input_path": "data", "params": {"title": "x one",
                                                                     "bins": 5}}))
    assert err == 0, out
    ticket = json.loads(out)
    name = ticket["target"]
    assert ticket["kind"] == "visualization"
    assert re.fullmatch(r"histogram-[0-9a-f]{8}", name) and ticket["key"].startswith(name[-8:])
    assert name in os.listdir(viz)
    seen = wait_file(viz / name / "status", FINISHED)
    assert seen[-1] == "success", ((viz / name / "log").read_text(), seen)
    assert sorted(os.listdir(viz / name)) == sorted(
        ["visualization.json", "status", "params.json", "log", "ctl", "ctl.error", "outputs",
         "artifacts"])
    v = json.loads((viz / name / "visualization.json").read_text())
    assert v["branch"] == f"data-visualization/{name}"
    out_dir = viz / name / "outputs"
    assert sorted(os.listdir(out_dir)) == ["index.html", "plot.svg", "summary.json"]
    svg = ET.fromstring((out_dir / "plot.svg").read_bytes())
    assert len([e for e in svg.iter() if e.tag.endswith("rect")]) == 5
    assert "<h1>x one</h1>" in (out_dir / "index.html").read_text()
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["n"] == 200 and sum(summary["bins"]) == 200
    assert os.stat(out_dir / "plot.svg").st_size == len((out_dir / "plot.svg").read_bytes())
    assert sorted(os.listdir(viz / name / "artifacts/output")) == sorted(os.listdir(out_dir))
    assert json.loads((m / ".reef/status").read_text())["control_writes"]["delivered"] == 1
