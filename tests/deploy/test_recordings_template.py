"""The recordings bucket and its least privilege, against the code that uses them."""

from __future__ import annotations

from typing import Any

from tests.deploy import cfn
from voicebridge.call_records import RECORDINGS_PREFIX

BUCKET_ARN = {"Fn::GetAtt": ["RecordingsBucket", "Arn"]}
OBJECTS = {"Fn::Sub": "${RecordingsBucket.Arn}/" + RECORDINGS_PREFIX + "*"}
# The S3 operations the edge's recorder calls (media_edge/io/recording.py; the moto tests check
# it calls nothing else) and the IAM action each one needs (S3's authorization reference:
# multipart creation, parts and completion are all s3:PutObject).
EDGE_S3_OPERATIONS = {
    "put_object": "s3:PutObject",
    "create_multipart_upload": "s3:PutObject",
    "upload_part": "s3:PutObject",
    "complete_multipart_upload": "s3:PutObject",
    "abort_multipart_upload": "s3:AbortMultipartUpload",
}


def _conditional(policies: list[Any], condition: str) -> list[dict[str, Any]]:
    """The policies listed as ``!If [condition, policy, !Ref AWS::NoValue]``."""
    found = []
    for policy in policies:
        branch = policy.get("Fn::If") if isinstance(policy, dict) else None
        if branch and branch[0] == condition:
            assert branch[2] == {"Ref": "AWS::NoValue"}
            found.append(branch[1])
    return found


def test_recordings_are_off_unless_enabled():
    params = cfn.TEMPLATE["Parameters"]
    assert params["RecordingsEnabled"]["Default"] == "false"
    assert cfn.TEMPLATE["Conditions"]["RecordingsOn"] == {
        "Fn::Equals": [{"Ref": "RecordingsEnabled"}, "true"]
    }
    for name in ("RecordingsBucket", "RecordingsBucketPolicy"):
        assert cfn.RESOURCES[name]["Condition"] == "RecordingsOn"


def test_the_bucket_is_private_encrypted_and_expires_what_it_holds():
    props = cfn.props("RecordingsBucket")
    (rule,) = props["BucketEncryption"]["ServerSideEncryptionConfiguration"]
    assert rule["ServerSideEncryptionByDefault"] == {"SSEAlgorithm": "AES256"}
    assert set(props["PublicAccessBlockConfiguration"].values()) == {True}
    assert len(props["PublicAccessBlockConfiguration"]) == 4
    assert props["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
    rules = {r["Id"]: r for r in props["LifecycleConfiguration"]["Rules"]}
    expire = rules["expire-recordings"]
    assert expire["ExpirationInDays"] == {"Ref": "RecordingsExpireDays"}
    assert expire["Prefix"] == RECORDINGS_PREFIX
    assert rules["abort-unfinished-uploads"]["AbortIncompleteMultipartUpload"] == {
        "DaysAfterInitiation": 1
    }
    assert cfn.RESOURCES["RecordingsBucket"]["DeletionPolicy"] == "Retain"


def test_the_bucket_refuses_plain_http_and_other_encryption():
    statements = cfn.props("RecordingsBucketPolicy")["PolicyDocument"]["Statement"]
    by_sid = {s["Sid"]: s for s in statements}
    transport = by_sid["DenyInsecureTransport"]
    assert (transport["Effect"], transport["Action"]) == ("Deny", "s3:*")
    assert transport["Condition"] == {"Bool": {"aws:SecureTransport": "false"}}
    assert BUCKET_ARN in transport["Resource"]
    encryption = by_sid["DenyOtherEncryption"]
    assert (encryption["Effect"], encryption["Action"]) == ("Deny", "s3:PutObject")
    # IfExists: UploadPart carries no encryption header; a Null check would refuse every part
    assert encryption["Condition"] == {
        "StringNotEqualsIfExists": {"s3:x-amz-server-side-encryption": "AES256"}
    }


def test_the_edge_may_only_upload_recordings_under_the_prefix():
    (policy,) = _conditional(cfn.props("EdgeTaskRole")["Policies"], "RecordingsOn")
    (statement,) = policy["PolicyDocument"]["Statement"]
    assert statement["Effect"] == "Allow"
    assert set(statement["Action"]) == set(EDGE_S3_OPERATIONS.values())
    assert statement["Resource"] == OBJECTS
    assert "s3:GetObject" not in statement["Action"]  # the edge never reads a recording


def test_the_edge_may_only_update_call_items():
    policies = {
        p["PolicyName"]: p for p in cfn.props("EdgeTaskRole")["Policies"] if "PolicyName" in p
    }
    # one statement for every write to a call's items: the stream claim, the console's control
    # URL, the picture and the recording link
    (statement,) = policies["call-items"]["PolicyDocument"]["Statement"]
    assert statement["Action"] == "dynamodb:UpdateItem"
    assert statement["Resource"] == {"Fn::GetAtt": ["SessionsTable", "Arn"]}
    assert statement["Condition"] == {
        "ForAllValues:StringLike": {"dynamodb:LeadingKeys": ["CALL#*"]}
    }


def test_the_api_may_only_read_recordings_to_presign_them():
    (policy,) = _conditional(cfn.props("ApiFunction")["Policies"], "RecordingsOn")
    (statement,) = policy["Statement"]
    assert (statement["Effect"], statement["Action"]) == ("Allow", "s3:GetObject")
    assert statement["Resource"] == OBJECTS
    worker = cfn.props("WorkerFunction")
    assert "RECORDINGS_BUCKET" not in worker["Environment"]["Variables"]


def test_the_bucket_reaches_the_edge_and_the_api_only_when_enabled():
    conditional = {"Fn::If": ["RecordingsOn", {"Ref": "RecordingsBucket"}, ""]}
    assert cfn.edge_deployable().env["RECORDINGS_BUCKET"] == conditional
    api = cfn.function_deployable("ApiFunction")
    assert api.env["RECORDINGS_BUCKET"] == conditional


def test_the_spool_is_a_writable_volume_on_the_read_only_root():
    task = cfn.props("EdgeTaskDefinition")
    container = cfn.edge_container()
    assert container["ReadonlyRootFilesystem"] is True
    spool = cfn.edge_deployable().env["RECORDINGS_SPOOL_DIR"]
    (mount,) = container["MountPoints"]
    assert mount["ContainerPath"] == spool
    (volume,) = task["Volumes"]
    assert volume == {"Name": mount["SourceVolume"]}  # a bind mount on ephemeral storage
    instructions = cfn.dockerfile()
    # the image owns the path for its user and declares it a VOLUME, so ECS copies the owner
    assert ("RUN", f"mkdir {spool} && chown edge:edge {spool}") in instructions
    assert ("VOLUME", f'["{spool}"]') in instructions
    assert instructions.index(("VOLUME", f'["{spool}"]')) < instructions.index(("USER", "edge"))
