"""Drives tunnel-service's control plane with boto3 and checks it against
botocore's iotsecuretunneling service model, read from the installed botocore
(not hard-coded here): every operation of the model is called; every raw
response is checked member by member (no member outside the shape, types,
lengths, ranges, enums, patterns); every modeled error is provoked and must
come back as the model's exception; and for every constraint of every input
member the model has, a request breaking it must be refused with a
ValidationException naming that member.

Run by tests/aws_api.rs:  python check_api.py http://127.0.0.1:PORT MAX_OPEN
Prints one line per failure and a closing 'N passed, N failed' line; exits 1
on any failure.
"""

import copy
import json
import sys

import boto3
import regex
from botocore import xform_name
from botocore.config import Config
from botocore.exceptions import ClientError

ENDPOINT = sys.argv[1]
MAX_OPEN = int(sys.argv[2])

passed = 0
failed = []
raw = {}


def ok(cond, what):
    global passed
    if cond:
        passed += 1
    else:
        failed.append(what)
        print("FAIL:", what, flush=True)
    return cond


def capture(http_response, model, **_):
    raw["status"] = http_response.status_code
    raw["body"] = http_response.content
    raw["headers"] = dict(http_response.headers)
    raw["op"] = model.name


def make_client(validate):
    c = boto3.client(
        "iotsecuretunneling",
        endpoint_url=ENDPOINT,
        region_name="us-east-1",
        aws_access_key_id="AKIDEXAMPLE",
        aws_secret_access_key="not-checked",
        config=Config(parameter_validation=validate, retries={"max_attempts": 1}),
    )
    c.meta.events.register("after-call", capture)
    return c


client = make_client(True)
unchecked = make_client(False)
model = client.meta.service_model
called = set()


# ----------------------------------------------------------- shape checks

def check_value(value, shape, path, problems):
    t = shape.type_name
    meta = shape.metadata
    if t == "structure":
        if not isinstance(value, dict):
            problems.append(f"{path}: {value!r} is not an object")
            return
        for k in value:
            if k not in shape.members:
                problems.append(f"{path}: member {k!r} is not in shape {shape.name}")
        for k in shape.required_members:
            if k not in value:
                problems.append(f"{path}: required member {k!r} missing")
        for k, v in value.items():
            if k in shape.members:
                check_value(v, shape.members[k], f"{path}.{k}", problems)
    elif t == "list":
        if not isinstance(value, list):
            problems.append(f"{path}: {value!r} is not a list")
            return
        if "min" in meta and len(value) < meta["min"]:
            problems.append(f"{path}: {len(value)} items, model min {meta['min']} (leave it out instead)")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: {len(value)} items, model max {meta['max']}")
        for i, v in enumerate(value):
            check_value(v, shape.member, f"{path}[{i}]", problems)
    elif t == "string":
        if not isinstance(value, str):
            problems.append(f"{path}: {value!r} is not a string")
            return
        if shape.enum and value not in shape.enum:
            problems.append(f"{path}: {value!r} not in enum {shape.enum}")
        if "min" in meta and len(value) < meta["min"]:
            problems.append(f"{path}: length {len(value)} < min {meta['min']}")
        if "max" in meta and len(value) > meta["max"]:
            problems.append(f"{path}: length {len(value)} > max {meta['max']}")
        if "pattern" in meta and not regex.fullmatch(meta["pattern"], value):
            problems.append(f"{path}: {value[:40]!r} does not match {meta['pattern']}")
    elif t in ("integer", "long"):
        if not isinstance(value, int) or isinstance(value, bool):
            problems.append(f"{path}: {value!r} is not an integer")
            return
        if "min" in meta and value < meta["min"]:
            problems.append(f"{path}: {value} < min {meta['min']}")
        if "max" in meta and value > meta["max"]:
            problems.append(f"{path}: {value} > max {meta['max']}")
    elif t == "boolean":
        if not isinstance(value, bool):
            problems.append(f"{path}: {value!r} is not a boolean")
    elif t == "timestamp":
        # AWS JSON 1.1 sends timestamps as epoch seconds.
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            problems.append(f"{path}: {value!r} is not epoch seconds")
    else:
        problems.append(f"{path}: shape type {t} not handled by this test")


def check_last_response(op_name):
    """The raw JSON of the last response against the operation's shapes."""
    op = model.operation_model(op_name)
    ok(raw.get("op") == op_name, f"{op_name}: the response seen is {raw.get('op')}'s")
    body = json.loads(raw["body"] or b"{}")
    problems = []
    if raw["status"] == 200:
        check_value(body, op.output_shape, op_name, problems)
    else:
        ok(raw["status"] == 400, f"{op_name}: error with HTTP {raw['status']}, not 400")
        kind = body.get("__type", "").split("#")[-1]
        ok(isinstance(body.get("message"), str) and body["message"],
           f"{op_name}: error body without a message: {body}")
        ok(raw["headers"].get("x-amzn-ErrorType", "").split(":")[0] == kind,
           f"{op_name}: x-amzn-ErrorType {raw['headers'].get('x-amzn-ErrorType')!r} is not {kind!r}")
        err = next((e for e in op.error_shapes if e.name == kind), None)
        if err is not None:
            check_value({k: v for k, v in body.items() if k != "__type"}, err, kind, problems)
    for p in problems:
        ok(False, p)
    if not problems:
        ok(True, "")
    return body


def call(op_name, c=None, **params):
    """Calls an operation that must succeed; returns its raw JSON."""
    c = c or client
    called.add(op_name)
    try:
        getattr(c, xform_name(op_name))(**params)
    except ClientError as e:
        ok(False, f"{op_name}({params}) failed: {e}")
        return {}
    return check_last_response(op_name)


def expect_error(op_name, code, c=None, **params):
    """Calls an operation that must fail with `code`; returns the message."""
    c = c or client
    called.add(op_name)
    try:
        getattr(c, xform_name(op_name))(**params)
    except ClientError as e:
        got = e.response["Error"]["Code"]
        ok(got == code, f"{op_name}({str(params)[:200]}): {got} ({e.response['Error'].get('Message')}), expected {code}")
        op = model.operation_model(op_name)
        if code != "ValidationException" and code != "SerializationException":
            ok(code in [s.name for s in op.error_shapes],
               f"{op_name}: {code} is not among the model's errors of the operation")
            cls = getattr(client.exceptions, code, None)
            ok(cls is not None and isinstance(e, cls), f"{op_name}: {code} is not raised as client.exceptions.{code}")
        check_last_response(op_name)
        return e.response["Error"].get("Message", "")
    ok(False, f"{op_name}({str(params)[:200]}) succeeded, expected {code}")
    return ""


# ------------------------------------------------------------- scenarios

full = call(
    "OpenTunnel",
    description="é" * 2048,
    tags=[{"key": "k" * 128, "value": "ü" * 256}, {"key": "empty value", "value": ""}],
    destinationConfig={"thingName": "thing-1", "services": ["SSH1", "WEB_2"]},
    timeoutConfig={"maxLifetimeTimeoutMinutes": 30},
)
bare = call("OpenTunnel")
third = call("OpenTunnel", destinationConfig={"thingName": "thing-2", "services": ["A"]})
ids = [full["tunnelId"], bare["tunnelId"], third["tunnelId"]]

t = call("DescribeTunnel", tunnelId=full["tunnelId"])["tunnel"]
ok(t["description"] == "é" * 2048, "DescribeTunnel: description kept")
ok(t["tags"] == [{"key": "k" * 128, "value": "ü" * 256}, {"key": "empty value", "value": ""}],
   f"DescribeTunnel: tags kept: {t.get('tags')}")
ok(t["destinationConfig"] == {"thingName": "thing-1", "services": ["SSH1", "WEB_2"]}, "destinationConfig kept")
ok(t["timeoutConfig"] == {"maxLifetimeTimeoutMinutes": 30}, "timeoutConfig kept")
ok(t["status"] == "OPEN" and t["sourceConnectionState"]["status"] == "DISCONNECTED", "fresh tunnel state")
ok(t["tunnelArn"] == full["tunnelArn"], "same ARN")

b = call("DescribeTunnel", tunnelId=bare["tunnelId"])["tunnel"]
for absent in ("tags", "destinationConfig", "description"):
    ok(absent not in b, f"DescribeTunnel of a tunnel opened without {absent}: absent, got {b.get(absent)!r}")
ok(b["timeoutConfig"] == {"maxLifetimeTimeoutMinutes": 720}, "default lifetime 720")

listed = call("ListTunnels")["tunnelSummaries"]
mine = [s["tunnelId"] for s in listed if s["tunnelId"] in ids]
ok(mine == list(reversed(ids)), f"ListTunnels newest first: {mine} vs opened {ids}")
created = [s["createdAt"] for s in listed]
ok(created == sorted(created, reverse=True), "ListTunnels createdAt descending")
paged, token = [], None
while True:
    kw = {"maxResults": 1}
    if token:
        kw["nextToken"] = token
    page = call("ListTunnels", **kw)
    paged += [s["tunnelId"] for s in page["tunnelSummaries"]]
    token = page.get("nextToken")
    if not token:
        break
ok(paged == [s["tunnelId"] for s in listed], "ListTunnels pages of 1 give the same order")
by_thing = call("ListTunnels", thingName="thing-2")["tunnelSummaries"]
ok([s["tunnelId"] for s in by_thing] == [third["tunnelId"]], "ListTunnels thingName filter")

r = call("RotateTunnelAccessToken", tunnelId=full["tunnelId"], clientMode="SOURCE")
ok("sourceAccessToken" in r and "destinationAccessToken" not in r, "rotate SOURCE gives the source token only")
r = call("RotateTunnelAccessToken", tunnelId=full["tunnelId"], clientMode="DESTINATION",
         destinationConfig={"services": ["NEW"]})
ok("destinationAccessToken" in r and "sourceAccessToken" not in r, "rotate DESTINATION")
ok(call("DescribeTunnel", tunnelId=full["tunnelId"])["tunnel"]["destinationConfig"]["services"] == ["NEW"],
   "rotate with destinationConfig replaces the services")
r = call("RotateTunnelAccessToken", tunnelId=full["tunnelId"], clientMode="ALL")
ok("destinationAccessToken" in r and "sourceAccessToken" in r and r["tunnelArn"] == full["tunnelArn"], "rotate ALL")

arn = bare["tunnelArn"]
ok(call("ListTagsForResource", resourceArn=arn) == {}, "no tags: no tags member")
call("TagResource", resourceArn=arn, tags=[{"key": "a", "value": "1"}, {"key": "b", "value": "2"}])
call("TagResource", resourceArn=arn, tags=[{"key": "a", "value": "3"}])
got = call("ListTagsForResource", resourceArn=arn).get("tags")
ok(got == [{"key": "a", "value": "3"}, {"key": "b", "value": "2"}], f"TagResource adds and overwrites: {got}")
call("UntagResource", resourceArn=arn, tagKeys=["a", "not-there"])
got = call("ListTagsForResource", resourceArn=arn).get("tags")
ok(got == [{"key": "b", "value": "2"}], f"UntagResource removes: {got}")
ok(call("DescribeTunnel", tunnelId=bare["tunnelId"])["tunnel"]["tags"] == got, "Describe shows the same tags")

call("CloseTunnel", tunnelId=third["tunnelId"])
ok(call("DescribeTunnel", tunnelId=third["tunnelId"])["tunnel"]["status"] == "CLOSED", "closed tunnel is CLOSED")
call("CloseTunnel", tunnelId=third["tunnelId"], delete=True)
expect_error("DescribeTunnel", "ResourceNotFoundException", tunnelId=third["tunnelId"])

# Every modeled ResourceNotFoundException, for an unknown tunnel id or ARN.
unknown_arn = "arn:aws:iot:us-east-1:123456789012:tunnel/00000000-0000-0000-0000-000000000000"
not_found_calls = {
    "CloseTunnel": {"tunnelId": "no-such-tunnel"},
    "DescribeTunnel": {"tunnelId": "no-such-tunnel"},
    "RotateTunnelAccessToken": {"tunnelId": "no-such-tunnel", "clientMode": "ALL"},
    "TagResource": {"resourceArn": unknown_arn, "tags": [{"key": "k", "value": "v"}]},
    "UntagResource": {"resourceArn": unknown_arn, "tagKeys": ["k"]},
    "ListTagsForResource": {"resourceArn": unknown_arn},
}
for name in model.operation_names:
    op = model.operation_model(name)
    if "ResourceNotFoundException" in [e.name for e in op.error_shapes]:
        ok(name in not_found_calls, f"{name} models ResourceNotFoundException but this test has no call for it")
        if name in not_found_calls:
            expect_error(name, "ResourceNotFoundException", **not_found_calls[name])

# LimitExceededException: open tunnels until the service's limit.
opened = []
for _ in range(MAX_OPEN + 1):
    try:
        client.open_tunnel()
        opened.append(json.loads(raw["body"])["tunnelId"])
    except ClientError:
        break
ok(len(opened) <= MAX_OPEN, f"more than {MAX_OPEN} tunnels opened")
expect_error("OpenTunnel", "LimitExceededException")
for i in opened:
    client.close_tunnel(tunnelId=i, delete=True)
call("OpenTunnel")

# ------------------------------------------------ every input constraint

baselines = {
    "OpenTunnel": {"description": "d", "tags": [{"key": "k", "value": "v"}],
                   "destinationConfig": {"thingName": "t", "services": ["S"]},
                   "timeoutConfig": {"maxLifetimeTimeoutMinutes": 5}},
    "CloseTunnel": {"tunnelId": "abc", "delete": False},
    "DescribeTunnel": {"tunnelId": "abc"},
    "ListTunnels": {"thingName": "t", "maxResults": 5, "nextToken": "abc"},
    "RotateTunnelAccessToken": {"tunnelId": "abc", "clientMode": "DESTINATION",
                                "destinationConfig": {"thingName": "t", "services": ["S"]}},
    "TagResource": {"resourceArn": "arn:x", "tags": [{"key": "k", "value": "v"}]},
    "UntagResource": {"resourceArn": "arn:x", "tagKeys": ["k"]},
    "ListTagsForResource": {"resourceArn": "arn:x"},
}
ok(set(baselines) == set(model.operation_names),
   f"operations of the model {sorted(model.operation_names)} vs those this test knows {sorted(baselines)}")


def violations(shape, value):
    """(description, bad value) pairs breaking each constraint of `shape`."""
    meta = shape.metadata
    t = shape.type_name
    out = []
    if t == "string":
        if shape.enum:
            out.append(("enum", "NOT_IN_ENUM"))
        if meta.get("min", 0) > 0:
            out.append(("min length", "x" * (meta["min"] - 1)))
        if "max" in meta:
            out.append(("max length", (value * (meta["max"] + 1))[: meta["max"] + 1]))
        if "pattern" in meta:
            for c in ["#", "\u0007", "\t", "\u200b", "!"]:
                bad = value[:-1] + c if len(value) > 1 else c
                if not regex.fullmatch(meta["pattern"], bad) and len(bad) <= meta.get("max", 10**9):
                    out.append(("pattern", bad))
                    break
            else:
                ok(False, f"no value found that breaks pattern {meta['pattern']}")
            m = regex.search(r"\{(\d+),(\d+)\}", meta["pattern"])
            if m:
                out.append(("pattern length", "a" * (int(m.group(2)) + 1)))
    elif t in ("integer", "long"):
        if "min" in meta:
            out.append(("min", meta["min"] - 1))
        if "max" in meta:
            out.append(("max", meta["max"] + 1))
    elif t == "list":
        if meta.get("min", 0) > 0:
            out.append(("min items", []))
        if "max" in meta:
            out.append(("max items", [copy.deepcopy(value[0]) for _ in range(meta["max"] + 1)]))
    return out


def members(shape, value, path, coral):
    """(path, coral path, shape, value) of every member in `value`, nested."""
    yield path, coral, shape, value
    if shape.type_name == "structure":
        for k, v in value.items():
            yield from members(shape.members[k], v, path + [k], f"{coral}.{k}" if coral else k)
    elif shape.type_name == "list" and value:
        yield from members(shape.member, value[0], path + [0], f"{coral}.1.member")


def set_at(obj, path, v):
    for p in path[:-1]:
        obj = obj[p]
    obj[path[-1]] = v


def del_at(obj, path):
    for p in path[:-1]:
        obj = obj[p]
    del obj[path[-1]]


for name, base in baselines.items():
    op = model.operation_model(name)
    for path, coral, shape, value in members(op.input_shape, base, [], ""):
        if not path:
            continue
        parent_shape = op.input_shape
        for p in path[:-1]:
            parent_shape = parent_shape.members[p] if parent_shape.type_name == "structure" else parent_shape.member
        if parent_shape.type_name == "structure" and path[-1] in parent_shape.required_members:
            req = copy.deepcopy(base)
            del_at(req, path)
            msg = expect_error(name, "ValidationException", c=unchecked, **req)
            ok(f"at '{coral}'" in msg and "not be null" in msg, f"{name} without {coral}: {msg}")
        for what, bad in violations(shape, value):
            req = copy.deepcopy(base)
            set_at(req, path, bad)
            msg = expect_error(name, "ValidationException", c=unchecked, **req)
            ok(f"at '{coral}'" in msg, f"{name} {coral} ({what}): the message names the member: {msg[:300]}")

# A member of the wrong JSON type.
expect_error("ListTunnels", "SerializationException", c=unchecked, maxResults="five")

missing = set(model.operation_names) - called
ok(not missing, f"operations of the model never called: {sorted(missing)}")
print(f"{passed} passed, {len(failed)} failed", flush=True)
sys.exit(1 if failed else 0)
