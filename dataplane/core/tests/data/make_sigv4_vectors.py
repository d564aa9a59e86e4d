#!/usr/bin/env python3
"""Makes sigv4_vectors.json: DynamoDB requests signed by botocore (the AWS
SDK for Python), for dyno-core's SigV4 verifier tests. Re-run to refresh:

    python3 dataplane/core/tests/data/make_sigv4_vectors.py > dataplane/core/tests/data/sigv4_vectors.json
"""
import json
from urllib.parse import urlsplit

from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
KEY_ID = "DKAAAAAAAAAAAAAAAAAA"

cases = [
    ("GetItem", "us-east-1", "http://127.0.0.1:7000/", {"TableName": "orders", "Key": {"pk": {"S": "a"}}}),
    ("PutItem", "eu-west-3", "http://localhost:7001/",
     {"TableName": "t.1-x", "Item": {"pk": {"S": "ü-unicode"}, "n": {"N": "1.50"}}}),
    ("ListTables", "us-east-1", "https://dyno.example.com/", {}),
    ("Query", "ap-south-1", "http://127.0.0.1:7002/?z=2&a=b%20c&a=a",
     {"TableName": "orders", "KeyConditionExpression": "pk = :v", "ExpressionAttributeValues": {":v": {"S": "x"}}}),
]
out = []
for op, region, url, body in cases:
    data = json.dumps(body)
    req = AWSRequest(method="POST", url=url, data=data, headers={
        "Content-Type": "application/x-amz-json-1.0",
        "X-Amz-Target": f"DynamoDB_20120810.{op}",
        "User-Agent": "Boto3/1.x   test  agent",
    })
    SigV4Auth(Credentials(KEY_ID, SECRET), "dynamodb", region).add_auth(req)
    prepared = req.prepare()
    out.append({
        "operation": op,
        "method": prepared.method,
        "url": prepared.url,
        # What the HTTP client sends as Host (signed, but not in the
        # prepared headers).
        "host": urlsplit(url).netloc,
        "headers": [[k, v] for k, v in prepared.headers.items()],
        "body": data,
        "secret": SECRET,
        "access_key_id": KEY_ID,
        "region": region,
    })
print(json.dumps(out, indent=1, ensure_ascii=False))
