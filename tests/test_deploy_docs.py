"""What docs/deploy.md gives works: the Kubernetes manifests parse and fit
together, and the gunicorn migration table names settings and flags that exist.

Every ```yaml block of docs/deploy.md is parsed with PyYAML. Of those, the
HorizontalPodAutoscaler must scale on a Pods metric named as the
prometheus-adapter rule names it (`name.as`), and that rule must compute it
from `prefork_workers_busy` and `prefork_workers`. Where promtool (Debian's
`prometheus` package) is installed, the rule's queries, with the adapter's
template filled in, are checked as PromQL too.
"""

import os
import pathlib
import re
import shutil
import subprocess

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is missing: pip install -e '.[test]'")

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs" / "deploy.md"
PROMTOOL = shutil.which("promtool")


def yaml_blocks():
    text = DOCS.read_text()
    return re.findall(r"^```yaml\n(.*?)^```$", text, re.M | re.S)


def documents():
    return [yaml.safe_load(block) for block in yaml_blocks()]


def of_kind(kind):
    found = [d for d in documents() if isinstance(d, dict) and d.get("kind") == kind]
    assert len(found) == 1, f"one {kind} in {DOCS.name}, found {len(found)}"
    return found[0]


def adapter_rule():
    configs = [d for d in documents() if isinstance(d, dict) and "rules" in d]
    assert len(configs) == 1, f"one prometheus-adapter config (`rules:`) in {DOCS.name}"
    rules = configs[0]["rules"]
    assert isinstance(rules, list) and len(rules) == 1
    return rules[0]


def quantity(value):
    """A Kubernetes quantity as a float: 700m, 0.7, "0.7"."""
    value = str(value)
    return float(value[:-1]) / 1000 if value.endswith("m") else float(value)


def test_every_yaml_block_parses():
    blocks = yaml_blocks()
    assert len(blocks) >= 4, f"the pod template, PodMonitor, adapter rule and HPA in {DOCS.name}"
    for block in blocks:
        document = yaml.safe_load(block)  # raises on a syntax error
        assert isinstance(document, dict), f"not a mapping:\n{block}"


def test_the_hpa_scales_on_the_adapters_metric():
    hpa = of_kind("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    spec = hpa["spec"]
    assert spec["scaleTargetRef"]["kind"] == "Deployment"
    assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
    pods = [m for m in spec["metrics"] if m["type"] == "Pods"]
    assert len(pods) == 1, "one Pods metric"
    metric = pods[0]["pods"]
    assert metric["metric"]["name"] == adapter_rule()["name"]["as"]
    assert metric["target"]["type"] == "AverageValue"
    assert 0 < quantity(metric["target"]["averageValue"]) < 1  # a share of the workers busy
    scale_down = spec["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 60


def test_the_adapter_rule_divides_busy_workers_by_workers():
    rule = adapter_rule()
    assert "prefork_workers_busy" in rule["seriesQuery"]
    assert re.search(r"\bprefork_workers_busy\b", rule["metricsQuery"])
    assert re.search(r"\bprefork_workers\b(?!_)", rule["metricsQuery"])
    assert rule["metricsQuery"].index("prefork_workers_busy") < rule["metricsQuery"].index("/")
    assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
    assert rule["resources"]["overrides"]["namespace"] == {"resource": "namespace"}
    assert re.fullmatch(r"[a-z_]+", rule["name"]["as"])


def test_the_pod_template_probes_the_masters_healthz():
    template = next(d for d in documents() if "spec" in d and "containers" in d.get("spec", {}))
    assert template["metadata"]["annotations"]["prometheus.io/port"] == "9108"
    container = template["spec"]["containers"][0]
    assert {"name": "metrics", "containerPort": 9108} in container["ports"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}


@pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")
def test_the_adapter_queries_are_promql(tmp_path):
    rule = adapter_rule()
    # What prometheus-adapter puts in the template for the HPA's question "these pods".
    query = (rule["metricsQuery"].replace("<<.LabelMatchers>>", 'namespace="default",pod=~"app-.*"')
             .replace("<<.GroupBy>>", "pod"))
    assert "<<" not in query
    rules = {"groups": [{"name": "adapter", "rules": [
        {"record": "check:series", "expr": rule["seriesQuery"]},
        {"record": "check:utilization", "expr": query},
    ]}]}
    path = tmp_path / "rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([PROMTOOL, "check", "rules", os.fspath(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def migration_table():
    text = DOCS.read_text()
    section = text.split("## Coming from gunicorn", 1)[1].split("\n#", 1)[0]
    return [line.split("|")[1:4] for line in section.splitlines() if line.startswith("| ") and "---" not in line][1:]


def test_the_gunicorn_table_names_only_settings_and_flags_that_exist():
    """A migration table that names a setting or flag runprefork lacks sends people to an error."""
    from django_prefork import conf
    from django_prefork.management.commands.runprefork import Command

    parser = Command().create_parser("manage.py", "runprefork")
    flags = set(parser._option_string_actions)
    rows = migration_table()
    assert len(rows) > 25
    for gunicorn, ours, _ in rows:
        for name in re.findall(r"PREFORK_[A-Z_]+", ours):
            assert name.rstrip("_") in conf.BY_NAME, f"{gunicorn}: no setting {name}"
        for flag in re.findall(r"`(-[-\w]+)", ours):
            assert flag in flags, f"{gunicorn}: runprefork has no {flag}"


NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if os.path.exists(p)), None)


@pytest.mark.skipif(NGINX is None or shutil.which("openssl") is None,
                    reason="nginx or openssl is not installed (apt-get install nginx openssl)")
def test_the_nginx_config_passes_nginx_t(tmp_path):
    """The ```nginx block, as the file it says it is (conf.d/app.conf, inside http { }), with
    a throwaway certificate where it names the real one: `nginx -t` accepts it."""
    (block,) = re.findall(r"^```nginx\n(.*?)^```$", DOCS.read_text(), re.M | re.S)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=x",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    block = re.sub(r"/etc/letsencrypt/live/\S+/fullchain\.pem", str(cert), block)
    block = re.sub(r"/etc/letsencrypt/live/\S+/privkey\.pem", str(key), block)
    assert str(cert) in block and str(key) in block, "the block names its certificate and key"
    (tmp_path / "app.conf").write_text(block)
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid; error_log {tmp_path}/error.log; events {{}}\n"
        f"http {{ access_log off; client_body_temp_path {tmp_path}/body; proxy_temp_path {tmp_path}/proxy; "
        f"include {tmp_path}/app.conf; }}\n")
    checked = subprocess.run([NGINX, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)],
                             capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
