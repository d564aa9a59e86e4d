"""The DynamoDB-compatible API, driven by boto3 and the AWS CLI, unchanged.

Starts its own `dyno dev` deployment (3 nodes, Postgres, control plane) in a
temporary directory and uses the credentials it writes. Run by scripts/test:

    DYNO_BIN=target/debug/dyno python3 -m unittest discover -s tests/dynamodb -v

Everything that waits polls a condition with a deadline; nothing sleeps a
fixed time to let something happen.
"""

import datetime
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import unittest
import urllib.error
import urllib.request

import boto3
import botocore.config
from boto3.dynamodb.conditions import Attr, Key
from botocore.exceptions import ClientError

CLUSTER = {}


def eventually(what, fn, timeout=30.0, interval=0.05):
    """Polls fn until it returns a truthy value; fails after timeout."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            out = fn()
            if out:
                return out
        except Exception as e:  # noqa: BLE001 - kept for the failure message
            last = e
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what} (last error: {last!r})")


def setUpModule():
    binary = os.environ.get("DYNO_BIN", "target/debug/dyno")
    work = tempfile.mkdtemp(prefix="dyno-ddb-")
    os.chmod(work, 0o755)
    data = os.path.join(work, "dev")
    log = open(os.path.join(work, "dev.log"), "w")
    proc = subprocess.Popen(
        [binary, "dev", "--data-dir", data, "--base-port", "0"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    CLUSTER.update(proc=proc, work=work, log=log)

    def up():
        if proc.poll() is not None:
            with open(os.path.join(work, "dev.log")) as f:
                raise RuntimeError(f.read())
        with open(os.path.join(work, "dev.log")) as f:
            return "press Ctrl-C" in f.read()

    eventually("dyno dev to start", up, timeout=240, interval=0.2)
    with open(os.path.join(data, "cluster.json")) as f:
        c = json.load(f)
    CLUSTER.update(
        nodes=[n["http"] for n in c["nodes"]],
        cp=c["controlplane"],
        admin=c["admin"],
        demo=c["demo"],
        creds=os.path.join(data, "secrets", "aws-credentials"),
    )


def tearDownModule():
    proc = CLUSTER.get("proc")
    if proc and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    if CLUSTER.get("log"):
        CLUSTER["log"].close()
    if os.environ.get("DYNO_KEEP") is None and CLUSTER.get("work"):
        shutil.rmtree(CLUSTER["work"], ignore_errors=True)


def session(key_id=None, secret=None):
    if key_id is None:
        os.environ["AWS_SHARED_CREDENTIALS_FILE"] = CLUSTER["creds"]
        return boto3.session.Session(profile_name="dyno-demo")
    return boto3.session.Session(
        aws_access_key_id=key_id, aws_secret_access_key=secret, region_name="dyno")


def client(node=0, retries=None, **kw):
    cfg = botocore.config.Config(
        retries={"max_attempts": retries, "mode": "standard"} if retries else {"mode": "standard"})
    return session(**kw).client("dynamodb", endpoint_url=CLUSTER["nodes"][node], config=cfg)


def code(e):
    return e.response["Error"]["Code"]


def rest(method, path, token=None, body=None):
    req = urllib.request.Request(CLUSTER["cp"] + path, method=method)
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, data, timeout=10) as r:
            return r.status, json.loads(r.read() or b"{}")
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"{}")


def login(email, password):
    status, body = rest("POST", "/api/v1/auth/login", body={"email": email, "password": password})
    assert status == 200, body
    return body["token"]


_TABLES = set()


def make_table(name, range_key=("sk", "S"), hash_type="S"):
    """Creates a table through the DynamoDB API and waits for it."""
    c = client()
    schema = [{"AttributeName": "pk", "KeyType": "HASH"}]
    defs = [{"AttributeName": "pk", "AttributeType": hash_type}]
    if range_key:
        schema.append({"AttributeName": range_key[0], "KeyType": "RANGE"})
        defs.append({"AttributeName": range_key[0], "AttributeType": range_key[1]})
    if name not in _TABLES:
        c.create_table(TableName=name, KeySchema=schema, AttributeDefinitions=defs,
                       BillingMode="PAY_PER_REQUEST")
        _TABLES.add(name)
    # Every node must know it before the test uses any of them.
    for i in range(len(CLUSTER["nodes"])):
        client(i).get_waiter("table_exists").wait(
            TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
    return c


def sign(method, url, body, key_id, secret, when=None, target="DynamoDB_20120810.ListTables"):
    """A SigV4-signed request, written here independently of botocore."""
    when = when or datetime.datetime.now(datetime.timezone.utc)
    amz_date = when.strftime("%Y%m%dT%H%M%SZ")
    day = amz_date[:8]
    host = url.split("://", 1)[1].split("/", 1)[0]
    headers = {
        "content-type": "application/x-amz-json-1.0",
        "host": host,
        "x-amz-date": amz_date,
        "x-amz-target": target,
    }
    signed = ";".join(sorted(headers))
    canonical = "\n".join([
        method, "/", "",
        "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
        signed, hashlib.sha256(body).hexdigest(),
    ])
    scope = f"{day}/dyno/dynamodb/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope,
                         hashlib.sha256(canonical.encode()).hexdigest()])
    k = ("AWS4" + secret).encode()
    for part in (day, "dyno", "dynamodb", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, to_sign.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (
        f"AWS4-HMAC-SHA256 Credential={key_id}/{scope}, SignedHeaders={signed}, Signature={sig}")
    return headers


def raw(headers, body, node=0):
    req = urllib.request.Request(CLUSTER["nodes"][node] + "/", data=body, method="POST")
    for k, v in headers.items():
        req.add_header(k, v)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read()), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


class Protocol(unittest.TestCase):
    def demo_creds(self):
        d = CLUSTER["demo"]
        return d["access_key_id"], d["secret_access_key"]

    def test_health_and_headers(self):
        with urllib.request.urlopen(CLUSTER["nodes"][0] + "/", timeout=5) as r:
            self.assertEqual(r.status, 200)
        kid, secret = self.demo_creds()
        body = b"{}"
        status, out, headers = raw(sign("POST", CLUSTER["nodes"][0], body, kid, secret), body)
        self.assertEqual(status, 200, out)
        self.assertIn("TableNames", out)
        self.assertTrue(headers.get("x-amzn-RequestId") or headers.get("x-amzn-requestid"))
        self.assertIn("x-amz-crc32", {k.lower() for k in headers})

    def test_signature_checks(self):
        kid, secret = self.demo_creds()
        body = b"{}"
        good = sign("POST", CLUSTER["nodes"][0], body, kid, secret)
        # A changed byte in the body, a signed header or the date fails.
        status, out, _ = raw(good, b"{ }")
        self.assertEqual((status, out["__type"].split("#")[1]), (400, "InvalidSignatureException"))
        tampered = dict(good, **{"x-amz-target": "DynamoDB_20120810.DescribeEndpoints"})
        status, out, _ = raw(tampered, body)
        self.assertEqual(out["__type"].split("#")[1], "InvalidSignatureException")
        redated = dict(good, **{"x-amz-date": good["x-amz-date"][:-3] + "00Z"})
        if redated != good:
            status, out, _ = raw(redated, body)
            self.assertEqual(out["__type"].split("#")[1], "InvalidSignatureException")
        # Replayed from outside the 15-minute window.
        old = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(minutes=20)
        status, out, _ = raw(sign("POST", CLUSTER["nodes"][0], body, kid, secret, when=old), body)
        self.assertEqual(out["__type"].split("#")[1], "InvalidSignatureException")
        self.assertIn("expired", out["message"])
        # A wrong secret, an unknown key, no signature at all.
        status, out, _ = raw(sign("POST", CLUSTER["nodes"][0], body, kid, "x" * 43), body)
        self.assertEqual(out["__type"].split("#")[1], "InvalidSignatureException")
        status, out, _ = raw(sign("POST", CLUSTER["nodes"][0], body, "DK" + "A" * 18, secret), body)
        self.assertEqual(out["__type"].split("#")[1], "UnrecognizedClientException")
        status, out, _ = raw({"x-amz-target": "DynamoDB_20120810.ListTables",
                              "content-type": "application/x-amz-json-1.0"}, body)
        self.assertEqual((status, out["__type"].split("#")[1]),
                         (400, "MissingAuthenticationTokenException"))

    def test_describe_endpoints_and_consumed_capacity(self):
        c = make_table("capacity", range_key=None)
        eps = c.describe_endpoints()["Endpoints"]
        self.assertEqual(len(eps), 1)
        self.assertIn(eps[0]["Address"], CLUSTER["nodes"][0])
        out = c.put_item(TableName="capacity", Item={"pk": {"S": "k"}, "v": {"S": "x" * 1500}},
                         ReturnConsumedCapacity="TOTAL")
        self.assertEqual(out["ConsumedCapacity"], {"TableName": "capacity", "CapacityUnits": 2.0})
        out = c.get_item(TableName="capacity", Key={"pk": {"S": "k"}}, ReturnConsumedCapacity="TOTAL")
        self.assertEqual(out["ConsumedCapacity"]["CapacityUnits"], 0.5)
        out = c.get_item(TableName="capacity", Key={"pk": {"S": "k"}}, ConsistentRead=True,
                         ReturnConsumedCapacity="TOTAL")
        self.assertEqual(out["ConsumedCapacity"]["CapacityUnits"], 1.0)

    def test_unknown_operation_and_bad_json(self):
        kid, secret = self.demo_creds()
        body = b"{}"
        h = sign("POST", CLUSTER["nodes"][0], body, kid, secret, target="DynamoDB_20120810.Frobnicate")
        status, out, _ = raw(h, body)
        self.assertEqual((status, out["__type"].split("#")[1]), (400, "UnknownOperationException"))
        body = b"{not json"
        status, out, _ = raw(sign("POST", CLUSTER["nodes"][0], body, kid, secret), body)
        self.assertEqual((status, out["__type"].split("#")[1]), (400, "SerializationException"))


class Tables(unittest.TestCase):
    def test_describe_table_estimates_items_and_size(self):
        c = make_table("counted", range_key=None)
        described = lambda node: client(node).describe_table(TableName="counted")["Table"]
        self.assertEqual((described(0)["ItemCount"], described(0)["TableSizeBytes"]), (0, 0))
        for i in range(25):
            c.put_item(TableName="counted", Item={"pk": {"S": f"k{i}"}, "v": {"S": "x" * 200}})
        for i in range(5):
            c.delete_item(TableName="counted", Key={"pk": {"S": f"k{i}"}})
        # Three nodes at N=3: each holds every item, so each node's
        # estimate is exact once the last replica has the writes.
        for node in range(len(CLUSTER["nodes"])):
            eventually(f"node {node} to count 20 items",
                       lambda: described(node)["ItemCount"] == 20)
        small = described(0)["TableSizeBytes"]
        self.assertGreater(small, 20 * 200)
        for i in range(5, 25):
            c.put_item(TableName="counted", Item={"pk": {"S": f"k{i}"}, "v": {"S": "x" * 2000}})
        eventually("the size to grow with the values",
                   lambda: described(0)["TableSizeBytes"] > small + 20 * 1500)
        self.assertEqual(described(0)["ItemCount"], 20)

    def test_lifecycle_listing_and_tags(self):
        c = client()
        names = [f"life{i}" for i in range(3)]
        for n in names:
            make_table(n, range_key=None)
        d = c.describe_table(TableName="life0")["Table"]
        self.assertEqual(d["TableStatus"], "ACTIVE")
        self.assertEqual(d["KeySchema"], [{"AttributeName": "pk", "KeyType": "HASH"}])
        # ListTables pages.
        seen, start = [], None
        while True:
            kw = {"Limit": 2}
            if start:
                kw["ExclusiveStartTableName"] = start
            page = c.list_tables(**kw)
            self.assertLessEqual(len(page["TableNames"]), 2)
            seen += page["TableNames"]
            start = page.get("LastEvaluatedTableName")
            if not start:
                break
        self.assertEqual(seen, sorted(seen))
        self.assertTrue(set(names) <= set(seen), seen)
        # Throughput and billing are accepted and reported.
        c.update_table(TableName="life1", BillingMode="PROVISIONED",
                       ProvisionedThroughput={"ReadCapacityUnits": 7, "WriteCapacityUnits": 3})
        eventually("the new throughput", lambda: c.describe_table(TableName="life1")["Table"]
                   ["ProvisionedThroughput"]["ReadCapacityUnits"] == 7)
        # Tags.
        arn = d["TableArn"]
        c.tag_resource(ResourceArn=arn, Tags=[{"Key": "team", "Value": "core"}, {"Key": "env", "Value": "dev"}])
        eventually("tags", lambda: len(c.list_tags_of_resource(ResourceArn=arn)["Tags"]) == 2)
        c.untag_resource(ResourceArn=arn, TagKeys=["env"])
        eventually("untag", lambda: c.list_tags_of_resource(ResourceArn=arn)["Tags"]
                   == [{"Key": "team", "Value": "core"}])
        # Creating it again is ResourceInUse; deleting makes it disappear.
        with self.assertRaises(ClientError) as e:
            c.create_table(TableName="life0", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                           BillingMode="PAY_PER_REQUEST")
        self.assertEqual(code(e.exception), "ResourceInUseException")
        self.assertEqual(c.delete_table(TableName="life2")["TableDescription"]["TableStatus"], "DELETING")
        c.get_waiter("table_not_exists").wait(TableName="life2", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
        with self.assertRaises(ClientError) as e:
            c.get_item(TableName="life2", Key={"pk": {"S": "x"}})
        self.assertEqual(code(e.exception), "ResourceNotFoundException")

    def test_create_table_validation(self):
        c = client()
        with self.assertRaises(ClientError) as e:
            c.create_table(TableName="bad", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"},
                                                 {"AttributeName": "x", "AttributeType": "S"}],
                           BillingMode="PAY_PER_REQUEST")
        self.assertEqual(code(e.exception), "ValidationException")
        with self.assertRaises(ClientError) as e:
            c.describe_table(TableName="nosuchtable")
        self.assertEqual(code(e.exception), "ResourceNotFoundException")


class Items(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = make_table("items", range_key=("sk", "N"))

    def test_every_type_round_trips_and_numbers_normalise(self):
        item = {
            "pk": {"S": "types"}, "sk": {"N": "1.50"},
            "s": {"S": ""}, "n": {"N": "-0.000100"}, "b": {"B": b"\x00\x01"},
            "t": {"BOOL": True}, "z": {"NULL": True},
            "l": {"L": [{"S": "a"}, {"N": "2"}]}, "m": {"M": {"k": {"SS": ["x", "y"]}}},
            "ns": {"NS": ["1", "2.5"]}, "bs": {"BS": [b"a", b"b"]},
        }
        self.c.put_item(TableName="items", Item=item)
        got = self.c.get_item(TableName="items", Key={"pk": {"S": "types"}, "sk": {"N": "1.5"}},
                              ConsistentRead=True)["Item"]
        self.assertEqual(got["sk"], {"N": "1.5"})
        self.assertEqual(got["n"], {"N": "-0.0001"})
        self.assertEqual(got["s"], {"S": ""})
        self.assertEqual(got["b"], {"B": b"\x00\x01"})
        self.assertEqual(sorted(got["ns"]["NS"]), ["1", "2.5"])
        self.assertEqual(got["m"]["M"]["k"]["SS"], ["x", "y"])
        # 1.5 and 1.50 are one key.
        got = self.c.get_item(TableName="items", Key={"pk": {"S": "types"}, "sk": {"N": "1.500"}})
        self.assertIn("Item", got)

    def test_bad_items_are_refused_and_change_nothing(self):
        key = {"pk": {"S": "bad"}, "sk": {"N": "1"}}
        self.c.put_item(TableName="items", Item=dict(key, v={"S": "kept"}))
        cases = [
            {"pk": {"S": ""}, "sk": {"N": "1"}},                      # empty key
            {"pk": {"N": "1"}, "sk": {"N": "1"}},                      # wrong key type
            {"sk": {"N": "1"}},                                        # missing key
            dict(key, big={"S": "x" * (400 * 1024)}),                  # over 400 KB
            dict(key, n={"N": "1e400"}),                               # number out of range
            dict(key, s={"SS": ["a", "a"]}),                           # duplicate set member
        ]
        for item in cases:
            with self.assertRaises(ClientError) as e:
                self.c.put_item(TableName="items", Item=item)
            self.assertEqual(code(e.exception), "ValidationException", item.keys())
        got = self.c.get_item(TableName="items", Key=key, ConsistentRead=True)["Item"]
        self.assertEqual(got["v"], {"S": "kept"})

    def test_update_expressions(self):
        key = {"pk": {"S": "upd"}, "sk": {"N": "1"}}
        out = self.c.update_item(
            TableName="items", Key=key,
            UpdateExpression="SET #c = if_not_exists(#c, :zero) + :one, tags = :t, l = :l",
            ExpressionAttributeNames={"#c": "count"},
            ExpressionAttributeValues={":zero": {"N": "0"}, ":one": {"N": "1"},
                                       ":t": {"SS": ["a"]}, ":l": {"L": [{"S": "x"}]}},
            ReturnValues="ALL_NEW")["Attributes"]
        self.assertEqual(out["count"], {"N": "1"})
        out = self.c.update_item(
            TableName="items", Key=key,
            UpdateExpression="SET l = list_append(l, :more), #c = #c - :one REMOVE gone ADD tags :b",
            ExpressionAttributeNames={"#c": "count"},
            ExpressionAttributeValues={":more": {"L": [{"S": "y"}]}, ":one": {"N": "1"},
                                       ":b": {"SS": ["b"]}},
            ReturnValues="UPDATED_NEW")["Attributes"]
        self.assertEqual(out["l"], {"L": [{"S": "x"}, {"S": "y"}]})
        self.assertEqual(out["count"], {"N": "0"})
        self.assertEqual(out["tags"], {"SS": ["a", "b"]})
        out = self.c.update_item(TableName="items", Key=key, UpdateExpression="DELETE tags :a",
                                 ExpressionAttributeValues={":a": {"SS": ["a"]}},
                                 ReturnValues="UPDATED_NEW")["Attributes"]
        self.assertEqual(out["tags"], {"SS": ["b"]})
        old = self.c.update_item(TableName="items", Key=key, UpdateExpression="REMOVE l",
                                 ReturnValues="UPDATED_OLD")["Attributes"]
        self.assertEqual(old, {"l": {"L": [{"S": "x"}, {"S": "y"}]}})
        # The legacy AttributeUpdates still work.
        self.c.update_item(TableName="items", Key=key,
                           AttributeUpdates={"count": {"Action": "ADD", "Value": {"N": "5"}}})
        got = self.c.get_item(TableName="items", Key=key, ConsistentRead=True,
                              ProjectionExpression="#c", ExpressionAttributeNames={"#c": "count"})
        self.assertEqual(got["Item"], {"count": {"N": "5"}})
        for expr, values, msg in [
            ("SET pk = :v", {":v": {"S": "x"}}, "part of the key"),
            ("SET a = :v, a.b = :v", {":v": {"S": "x"}}, "overlap"),
            ("SET a = :nope", {":v": {"S": "x"}}, "not defined"),
            ("SET a = :v", {":v": {"S": "x"}, ":w": {"S": "y"}}, "unused"),
            ("SET = :v", {":v": {"S": "x"}}, "Syntax error"),
        ]:
            with self.assertRaises(ClientError) as e:
                self.c.update_item(TableName="items", Key=key, UpdateExpression=expr,
                                   ExpressionAttributeValues=values)
            self.assertEqual(code(e.exception), "ValidationException")
            self.assertIn(msg, e.exception.response["Error"]["Message"])

    def test_conditional_failures(self):
        key = {"pk": {"S": "cond"}, "sk": {"N": "1"}}
        self.c.put_item(TableName="items", Item=dict(key, v={"N": "1"}),
                        ConditionExpression="attribute_not_exists(pk)")
        with self.assertRaises(ClientError) as e:
            self.c.put_item(TableName="items", Item=dict(key, v={"N": "2"}),
                            ConditionExpression="attribute_not_exists(pk)",
                            ReturnValuesOnConditionCheckFailure="ALL_OLD")
        self.assertEqual(code(e.exception), "ConditionalCheckFailedException")
        self.assertEqual(e.exception.response["Item"]["v"], {"N": "1"})
        with self.assertRaises(ClientError) as e:
            self.c.delete_item(TableName="items", Key=key, ConditionExpression="v > :x",
                               ExpressionAttributeValues={":x": {"N": "5"}})
        self.assertEqual(code(e.exception), "ConditionalCheckFailedException")
        # Legacy Expected.
        with self.assertRaises(ClientError) as e:
            self.c.put_item(TableName="items", Item=key, Expected={"v": {"Value": {"N": "9"}}})
        self.assertEqual(code(e.exception), "ConditionalCheckFailedException")
        old = self.c.delete_item(TableName="items", Key=key, ConditionExpression="v = :one",
                                 ExpressionAttributeValues={":one": {"N": "1"}},
                                 ReturnValues="ALL_OLD")["Attributes"]
        self.assertEqual(old["v"], {"N": "1"})
        self.assertNotIn("Item", self.c.get_item(TableName="items", Key=key, ConsistentRead=True))

    def test_batches(self):
        items = [{"pk": {"S": "batch"}, "sk": {"N": str(i)}, "v": {"S": f"v{i}"}} for i in range(25)]
        out = self.c.batch_write_item(RequestItems={"items": [{"PutRequest": {"Item": i}} for i in items]})
        self.assertEqual(out["UnprocessedItems"], {})
        keys = [{"pk": {"S": "batch"}, "sk": {"N": str(i)}} for i in range(25)]
        keys += [{"pk": {"S": "batch-missing"}, "sk": {"N": str(i)}} for i in range(75)]
        got = self.c.batch_get_item(RequestItems={"items": {"Keys": keys, "ConsistentRead": True}})
        self.assertEqual(got["UnprocessedKeys"], {})
        self.assertEqual(sorted(int(i["sk"]["N"]) for i in got["Responses"]["items"]), list(range(25)))
        for bad in [
            {"items": [{"PutRequest": {"Item": items[0]}}, {"PutRequest": {"Item": items[0]}}]},
            {"items": [{"PutRequest": {"Item": i}} for i in items] + [{"DeleteRequest": {"Key": keys[30]}}]},
        ]:
            with self.assertRaises(ClientError) as e:
                self.c.batch_write_item(RequestItems=bad)
            self.assertEqual(code(e.exception), "ValidationException")
        with self.assertRaises(ClientError) as e:
            self.c.batch_get_item(RequestItems={"items": {"Keys": keys + keys[:1]}})
        self.assertEqual(code(e.exception), "ValidationException")
        self.c.batch_write_item(RequestItems={"items": [{"DeleteRequest": {"Key": k}} for k in keys[:10]]})
        got = self.c.batch_get_item(RequestItems={"items": {"Keys": keys[:25], "ConsistentRead": True}})
        self.assertEqual(len(got["Responses"]["items"]), 15)


class QueryAndScan(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.c = make_table("events", range_key=("ts", "N"))
        cls.t = session().resource("dynamodb", endpoint_url=CLUSTER["nodes"][1]).Table("events")
        with cls.t.batch_writer() as w:
            for user in ("alice", "bob", "carol"):
                for ts in range(60):
                    w.put_item(Item={"pk": user, "ts": ts * 10 - 100, "kind": "odd" if ts % 2 else "even",
                                     "pad": "x" * 20})

    def query_all(self, **kw):
        out, start = [], None
        while True:
            if start:
                kw["ExclusiveStartKey"] = start
            page = self.t.query(**kw)
            out += page["Items"]
            start = page.get("LastEvaluatedKey")
            if not start:
                return out

    def test_query_pages_in_sort_key_order(self):
        items = self.query_all(KeyConditionExpression=Key("pk").eq("bob"), Limit=7, ConsistentRead=True)
        self.assertEqual([int(i["ts"]) for i in items], [t * 10 - 100 for t in range(60)])
        back = self.query_all(KeyConditionExpression=Key("pk").eq("bob"), Limit=11, ScanIndexForward=False)
        self.assertEqual([int(i["ts"]) for i in back], [t * 10 - 100 for t in reversed(range(60))])

    def test_key_conditions(self):
        def ts(cond, **kw):
            return [int(i["ts"]) for i in self.query_all(KeyConditionExpression=Key("pk").eq("carol") & cond, **kw)]
        self.assertEqual(ts(Key("ts").between(-20, 20)), [-20, -10, 0, 10, 20])
        self.assertEqual(ts(Key("ts").lt(-80)), [-100, -90])
        self.assertEqual(ts(Key("ts").lte(-80)), [-100, -90, -80])
        self.assertEqual(ts(Key("ts").gt(470)), [480, 490])
        self.assertEqual(ts(Key("ts").gte(480), Limit=1), [480, 490])
        self.assertEqual(ts(Key("ts").eq(0)), [0])

    def test_filters_projection_and_count(self):
        page = self.t.query(KeyConditionExpression=Key("pk").eq("alice"),
                            FilterExpression=Attr("kind").eq("odd"), Limit=10)
        self.assertEqual((page["Count"], page["ScannedCount"]), (5, 10))
        page = self.t.query(KeyConditionExpression=Key("pk").eq("alice"), ProjectionExpression="ts")
        self.assertEqual(set(page["Items"][0]), {"ts"})
        page = self.c.query(TableName="events", KeyConditionExpression="pk = :p",
                            ExpressionAttributeValues={":p": {"S": "alice"}}, Select="COUNT")
        self.assertEqual(page["Count"], 60)
        self.assertNotIn("Items", page)
        with self.assertRaises(ClientError) as e:
            self.c.query(TableName="events", KeyConditionExpression="ts = :t",
                         ExpressionAttributeValues={":t": {"N": "1"}})
        self.assertIn("missed key schema element", e.exception.response["Error"]["Message"])

    def test_begins_with_and_binary_keys(self):
        c = make_table("blobs", range_key=("sk", "B"), hash_type="B")
        for name in (b"\x00a", b"\x00ab", b"\x00b", b"\x01a"):
            c.put_item(TableName="blobs", Item={"pk": {"B": b"\xff\x00"}, "sk": {"B": name}})
        out = c.query(TableName="blobs", KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
                      ExpressionAttributeValues={":p": {"B": b"\xff\x00"}, ":s": {"B": b"\x00a"}})
        self.assertEqual([i["sk"]["B"] for i in out["Items"]], [b"\x00a", b"\x00ab"])
        strings = make_table("words", range_key=("sk", "S"))
        for w in ("apple", "applet", "apricot", "banana"):
            strings.put_item(TableName="words", Item={"pk": {"S": "w"}, "sk": {"S": w}})
        out = strings.query(TableName="words", KeyConditionExpression="pk = :p AND begins_with(sk, :s)",
                            ExpressionAttributeValues={":p": {"S": "w"}, ":s": {"S": "app"}})
        self.assertEqual([i["sk"]["S"] for i in out["Items"]], ["apple", "applet"])

    def test_pages_stop_at_one_megabyte(self):
        c = make_table("bulky", range_key=("sk", "N"))
        for i in range(12):
            c.put_item(TableName="bulky", Item={"pk": {"S": "p"}, "sk": {"N": str(i)}, "v": {"S": "x" * 100_000}})
        first = c.query(TableName="bulky", KeyConditionExpression="pk = :p",
                        ExpressionAttributeValues={":p": {"S": "p"}})
        self.assertLess(first["Count"], 12)
        self.assertIn("LastEvaluatedKey", first)
        rest = c.query(TableName="bulky", KeyConditionExpression="pk = :p",
                       ExpressionAttributeValues={":p": {"S": "p"}}, ExclusiveStartKey=first["LastEvaluatedKey"])
        self.assertEqual(first["Count"] + rest["Count"], 12)
        self.assertNotIn("LastEvaluatedKey", rest)

    def test_legacy_query_and_scan_parameters(self):
        out = self.c.query(
            TableName="events",
            KeyConditions={"pk": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "alice"}]},
                           "ts": {"ComparisonOperator": "BETWEEN", "AttributeValueList": [{"N": "0"}, {"N": "50"}]}},
            QueryFilter={"kind": {"ComparisonOperator": "EQ", "AttributeValueList": [{"S": "even"}]}},
            AttributesToGet=["ts"])
        self.assertEqual([i["ts"]["N"] for i in out["Items"]], ["0", "20", "40"])
        self.assertEqual(out["ScannedCount"], 6)
        out = self.c.scan(TableName="events", ScanFilter={
            "ts": {"ComparisonOperator": "GE", "AttributeValueList": [{"N": "480"}]}})
        self.assertEqual(out["Count"], 6)

    def test_scan_pages_and_segments(self):
        seen = []
        start = None
        while True:
            kw = {"Limit": 25}
            if start:
                kw["ExclusiveStartKey"] = start
            page = self.t.scan(**kw)
            seen += [(i["pk"], int(i["ts"])) for i in page["Items"]]
            start = page.get("LastEvaluatedKey")
            if not start:
                break
        self.assertEqual(len(seen), 180)
        self.assertEqual(len(set(seen)), 180)
        total = 4
        parts = []
        for seg in range(total):
            items, start = [], None
            while True:
                kw = {"Segment": seg, "TotalSegments": total, "Limit": 30}
                if start:
                    kw["ExclusiveStartKey"] = start
                page = self.t.scan(**kw)
                items += [(i["pk"], int(i["ts"])) for i in page["Items"]]
                start = page.get("LastEvaluatedKey")
                if not start:
                    break
            parts.append(set(items))
        self.assertEqual(set().union(*parts), set(seen))
        self.assertEqual(sum(len(p) for p in parts), 180)
        odd = self.t.scan(FilterExpression=Attr("kind").eq("odd"))
        self.assertEqual(odd["Count"], 90)


class Ttl(unittest.TestCase):
    def test_expired_items_vanish(self):
        c = make_table("sessions", range_key=None)
        c.update_time_to_live(TableName="sessions",
                              TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires"})
        eventually("TTL enabled", lambda: c.describe_time_to_live(TableName="sessions")
                   ["TimeToLiveDescription"]["TimeToLiveStatus"] == "ENABLED")
        now = int(time.time())
        c.put_item(TableName="sessions", Item={"pk": {"S": "old"}, "expires": {"N": str(now - 10)}})
        c.put_item(TableName="sessions", Item={"pk": {"S": "new"}, "expires": {"N": str(now + 3600)}})
        self.assertNotIn("Item", c.get_item(TableName="sessions", Key={"pk": {"S": "old"}}, ConsistentRead=True))
        self.assertIn("Item", c.get_item(TableName="sessions", Key={"pk": {"S": "new"}}, ConsistentRead=True))
        self.assertEqual(c.scan(TableName="sessions", ConsistentRead=True)["Count"], 1)
        # An expired item is absent for conditions too.
        c.put_item(TableName="sessions", Item={"pk": {"S": "old"}, "v": {"S": "again"}},
                   ConditionExpression="attribute_not_exists(pk)")
        # The reaper deletes expired items (as tombstones) in the background.
        c.put_item(TableName="sessions", Item={"pk": {"S": "gone"}, "expires": {"N": str(now - 5)}})

        def reaped():
            total = 0
            for n in CLUSTER["nodes"]:
                with urllib.request.urlopen(n + "/metrics", timeout=5) as r:
                    for line in r.read().decode().splitlines():
                        if line.startswith("dyno_ttl_deleted_total "):
                            total += float(line.split()[1])
            return total >= 1
        eventually("the TTL reaper to delete an expired item", reaped, timeout=60, interval=0.5)
        self.assertNotIn("Item", c.get_item(TableName="sessions", Key={"pk": {"S": "gone"}}, ConsistentRead=True))
        self.assertIn("Item", c.get_item(TableName="sessions", Key={"pk": {"S": "new"}}, ConsistentRead=True))


class Throttling(unittest.TestCase):
    def test_limits_answer_provisioned_throughput_exceeded_and_retries_get_through(self):
        make_table("throttled", range_key=None)
        demo = CLUSTER["demo"]
        user = login(demo["email"], demo["password"])
        status, body = rest("PATCH", "/api/v1/tables/throttled", user, {"throughput_limit": 3})
        self.assertEqual(status, 200, body)
        once = client(retries=1)

        def throttled():
            try:
                for _ in range(20):
                    once.get_item(TableName="throttled", Key={"pk": {"S": "k"}})
            except ClientError as e:
                return code(e) == "ProvisionedThroughputExceededException"
            return False
        eventually("the limit to reach the node and throttle", throttled, timeout=30, interval=0.2)
        # A batch gets what fits and hands the rest back as UnprocessedItems.
        out = once.batch_write_item(RequestItems={"throttled": [
            {"PutRequest": {"Item": {"pk": {"S": f"b{i}"}}}} for i in range(25)]})
        self.assertGreater(len(out["UnprocessedItems"].get("throttled", [])), 0, out)
        got = once.batch_get_item(RequestItems={"throttled": {"Keys": [{"pk": {"S": f"g{i}"}} for i in range(50)]}})
        self.assertGreater(len(got["UnprocessedKeys"].get("throttled", {}).get("Keys", [])), 0, got)
        # The SDK's standard retries back off and get through.
        patient = client(retries=20)
        for i in range(5):
            patient.put_item(TableName="throttled", Item={"pk": {"S": f"k{i}"}})
        status, body = rest("PATCH", "/api/v1/tables/throttled", user, {"throughput_limit": None})
        self.assertEqual(status, 200, body)


class Tenancy(unittest.TestCase):
    def test_another_tenants_key_sees_nothing_and_scopes_apply(self):
        make_table("private", range_key=None)
        client().put_item(TableName="private", Item={"pk": {"S": "secret"}})
        root = login(CLUSTER["admin"]["email"], CLUSTER["admin"]["password"])
        rest("POST", "/api/v1/tenants", root, {"name": "rival"})
        status, _ = rest("POST", "/api/v1/tenants/rival/users", root,
                         {"email": "r@rival.test", "password": "rival-password-1", "role": "tenant_admin"})
        self.assertIn(status, (201, 409))
        user = login("r@rival.test", "rival-password-1")
        status, key = rest("POST", "/api/v1/keys", user, {"name": "rk", "scopes": [{"table": "*", "access": "manage"}]})
        self.assertEqual(status, 201, key)
        status, ro = rest("POST", "/api/v1/keys", user, {"name": "ro", "scopes": [{"table": "*", "access": "read"}]})
        self.assertEqual(status, 201, ro)
        rival = client(key_id=key["access_key_id"], secret=key["secret_access_key"], retries=1)
        eventually("the rival key to reach the node", lambda: rival.list_tables() is not None)
        self.assertNotIn("private", rival.list_tables()["TableNames"])
        for call in (lambda: rival.describe_table(TableName="private"),
                     lambda: rival.get_item(TableName="private", Key={"pk": {"S": "secret"}})):
            with self.assertRaises(ClientError) as e:
                call()
            self.assertEqual(code(e.exception), "ResourceNotFoundException")
        # Its own table of the same name is another table.
        rival.create_table(TableName="private", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                           AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                           BillingMode="PAY_PER_REQUEST")
        rival.get_waiter("table_exists").wait(TableName="private", WaiterConfig={"Delay": 0.2, "MaxAttempts": 300})
        self.assertNotIn("Item", rival.get_item(TableName="private", Key={"pk": {"S": "secret"}}))
        # A read-only key may read, not write, not create tables.
        reader = client(key_id=ro["access_key_id"], secret=ro["secret_access_key"], retries=1)
        eventually("the read-only key", lambda: reader.list_tables() is not None)
        reader.get_item(TableName="private", Key={"pk": {"S": "x"}})
        with self.assertRaises(ClientError) as e:
            reader.put_item(TableName="private", Item={"pk": {"S": "x"}})
        self.assertEqual(code(e.exception), "AccessDeniedException")
        with self.assertRaises(ClientError) as e:
            reader.create_table(TableName="mine", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                                BillingMode="PAY_PER_REQUEST")
        self.assertEqual(code(e.exception), "AccessDeniedException")


class Concurrency(unittest.TestCase):
    def test_concurrent_adds_lose_nothing(self):
        """16 clients x 50 `ADD counter :one`, spread over every node."""
        make_table("counters", range_key=None)
        clients, per = 16, 50
        errors = []

        def worker(i):
            c = client(node=i % len(CLUSTER["nodes"]))
            try:
                for _ in range(per):
                    c.update_item(TableName="counters", Key={"pk": {"S": "hot"}},
                                  UpdateExpression="ADD #n :one",
                                  ExpressionAttributeNames={"#n": "counter"},
                                  ExpressionAttributeValues={":one": {"N": "1"}})
            except Exception as e:  # noqa: BLE001 - reported below
                errors.append(e)

        started = time.monotonic()
        threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        elapsed = time.monotonic() - started
        self.assertEqual(errors, [])
        got = client().get_item(TableName="counters", Key={"pk": {"S": "hot"}}, ConsistentRead=True)
        self.assertEqual(got["Item"]["counter"], {"N": str(clients * per)})
        print(f"\n  {clients * per} concurrent ADDs in {elapsed:.2f} s ({clients * per / elapsed:.0f}/s)")


class Cli(unittest.TestCase):
    def aws(self, *args):
        env = dict(os.environ, AWS_SHARED_CREDENTIALS_FILE=CLUSTER["creds"], AWS_PROFILE="dyno-demo")
        out = subprocess.run(["aws", "dynamodb", *args, "--endpoint-url", CLUSTER["nodes"][2], "--output", "json"],
                             env=env, capture_output=True, text=True, timeout=60)
        return out.returncode, out.stdout, out.stderr

    def test_the_aws_cli_works_unchanged(self):
        make_table("cli", range_key=None)
        rc, out, err = self.aws("put-item", "--table-name", "cli", "--item", '{"pk": {"S": "k"}, "v": {"N": "42"}}')
        self.assertEqual(rc, 0, err)
        rc, out, err = self.aws("get-item", "--table-name", "cli", "--key", '{"pk": {"S": "k"}}', "--consistent-read")
        self.assertEqual(rc, 0, err)
        self.assertEqual(json.loads(out)["Item"]["v"], {"N": "42"})
        rc, out, err = self.aws("list-tables")
        self.assertEqual(rc, 0, err)
        self.assertIn("cli", json.loads(out)["TableNames"])
        rc, out, err = self.aws("get-item", "--table-name", "nope", "--key", '{"pk": {"S": "k"}}')
        self.assertNotEqual(rc, 0)
        self.assertIn("ResourceNotFoundException", err)


if __name__ == "__main__":
    unittest.main()
