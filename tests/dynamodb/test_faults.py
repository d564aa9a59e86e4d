"""A DynamoDB write survives the data plane's faults: a replica killed with
SIGKILL, writes and conditional updates meanwhile, and hinted handoff once
it is back. Its own `dyno dev` deployment, since it kills nodes.
"""

import base64
import json
import os
import signal
import subprocess
import time
import unittest
import urllib.parse
import urllib.request

import test_dynamodb as t


def setUpModule():
    t.setUpModule()


def tearDownModule():
    for p in t.CLUSTER.get("revived", []):
        if p.poll() is None:
            p.kill()
            p.wait()
    t.tearDownModule()


def cluster_file():
    with open(os.path.join(t.CLUSTER["work"], "dev", "cluster.json")) as f:
        return json.load(f)


def admin(node_url, path):
    data_dir = os.path.join(t.CLUSTER["work"], "dev")
    with open(os.path.join(data_dir, "secrets", "admin-token")) as f:
        token = f.read().strip()
    req = urllib.request.Request(node_url + path)
    req.add_header("Authorization", f"Bearer {token}")
    with urllib.request.urlopen(req, timeout=5) as r:
        return json.loads(r.read())


def healthy(url):
    try:
        with urllib.request.urlopen(url + "/admin/v1/health", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


class Faults(unittest.TestCase):
    def test_a_write_survives_sigkill_of_a_replica_and_hinted_handoff(self):
        c = t.make_table("durable", range_key=None)
        nodes = cluster_file()["nodes"]
        victim = nodes[2]
        os.kill(victim["pid"], signal.SIGKILL)
        t.eventually("the killed node to stop answering", lambda: not healthy(victim["http"]))
        # Writes through the other nodes go on: a put, then read-modify-writes
        # (their coordinator may be the dead node until it is detected).
        key = {"pk": {"S": "survivor"}}
        c.put_item(TableName="durable", Item=dict(key, v={"N": "1"}))
        for _ in range(5):
            c.update_item(TableName="durable", Key=key, UpdateExpression="ADD v :one",
                          ExpressionAttributeValues={":one": {"N": "1"}})
        got = c.get_item(TableName="durable", Key=key, ConsistentRead=True)["Item"]
        self.assertEqual(got["v"], {"N": "6"})
        # The survivors hold hints for it.
        def backlog():
            return sum(h["hints"] for n in nodes[:2] for h in admin(n["http"], "/admin/v1/hints")["targets"]
                       if h["node"] == victim["id"])
        t.eventually("hints for the killed node", lambda: backlog() > 0)
        # Bring it back from its disk; the hints are delivered.
        log = open(os.path.join(t.CLUSTER["work"], "revived.log"), "w")
        proc = subprocess.Popen(victim["argv"], stdout=log, stderr=subprocess.STDOUT)
        t.CLUSTER.setdefault("revived", []).append(proc)
        t.eventually("the node to be back", lambda: healthy(victim["http"]), timeout=60)
        t.eventually("the hints to be delivered", lambda: backlog() == 0, timeout=60)
        # Its own replica now has the latest version.
        raw_key = urllib.parse.quote(bytes([0, len("survivor")]) + b"survivor", safe="")
        path = f"/admin/v1/tenants/demo/tables/durable/keys/{raw_key}/replica"

        def local_v():
            r = admin(victim["http"], path)
            if not r["values"]:
                return None
            item = json.loads(base64.b64decode(r["values"][0])[1:])
            return item["v"]
        t.eventually("the revived replica to hold the write", lambda: local_v() == {"N": "6"})

    def test_items_outlive_the_control_plane(self):
        c = t.make_table("standalone", range_key=None)
        os.kill(cluster_file()["controlplane_pid"], signal.SIGKILL)
        # Table changes need the control plane: a 503-class error...
        with self.assertRaises(t.ClientError) as e:
            t.client(retries=1).create_table(
                TableName="later", KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
                AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                BillingMode="PAY_PER_REQUEST")
        self.assertEqual(t.code(e.exception), "ServiceUnavailable")
        self.assertEqual(e.exception.response["ResponseMetadata"]["HTTPStatusCode"], 503)
        # ...while items, descriptions and listings keep working.
        c.put_item(TableName="standalone", Item={"pk": {"S": "k"}, "v": {"S": "x"}})
        got = c.get_item(TableName="standalone", Key={"pk": {"S": "k"}}, ConsistentRead=True)
        self.assertEqual(got["Item"]["v"], {"S": "x"})
        self.assertEqual(c.describe_table(TableName="standalone")["Table"]["TableStatus"], "ACTIVE")
        self.assertIn("standalone", c.list_tables()["TableNames"])


if __name__ == "__main__":
    unittest.main()
