"""StartLiveTail is a real event stream (livetail.py): wire format, session rules and faults."""
from __future__ import annotations

import http.client
import json
import time
from urllib.parse import urlsplit

import pytest
from botocore.eventstream import EventStreamBuffer
from botocore.exceptions import ClientError, EventStreamError


@pytest.fixture
def tail(sim, aws, unique):
    """(logs client, group name, put(stream, *messages)). Updates every 200 ms for speed."""
    sim.post("/_sim/livetail", {"update_interval_ms": 200})
    # botocore, like the Rust SDK, sends this operation to "stream-" + the endpoint's host,
    # which does not resolve for 127.0.0.1; boto3 can turn the prefix off.
    logs = aws("logs", inject_host_prefix=False)
    group = unique("/sim/livetail")
    logs.create_log_group(logGroupName=group)

    def put(stream, *messages):
        try:
            logs.create_log_stream(logGroupName=group, logStreamName=stream)
        except logs.exceptions.ResourceAlreadyExistsException:
            pass
        now = int(time.time() * 1000)
        logs.put_log_events(logGroupName=group, logStreamName=stream,
                            logEvents=[{"timestamp": now, "message": m} for m in messages])
    return logs, group, put


def _updates(stream, limit_s: float = 20.0):
    """sessionUpdate payloads, failing the test instead of hanging past limit_s."""
    deadline = time.monotonic() + limit_s
    for ev in stream:
        assert time.monotonic() < deadline, "live tail went on too long"
        if "sessionUpdate" in ev:
            yield ev["sessionUpdate"]


def test_wire_format_with_the_host_an_sdk_sends(sim, tail):
    """Raw HTTP as an SDK sends it (Host stream-127.0.0.1:<port>), decoded message by message
    with botocore's event-stream parser, which checks both CRCs."""
    _logs, group, put = tail
    u = urlsplit(sim.endpoint)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    body = json.dumps({"logGroupIdentifiers": [group]})
    conn.request("POST", "/", body=body, headers={
        "Host": f"stream-{u.hostname}:{u.port}", "Content-Type": "application/x-amz-json-1.1",
        "X-Amz-Target": "Logs_20140328.StartLiveTail",
        "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/logs/"
                         "aws4_request, SignedHeaders=host, Signature=0"})
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type") == "application/vnd.amazon.eventstream"
    buf, msgs = EventStreamBuffer(), []
    put("s1", "hello")
    while not any(m.headers.get(":event-type") == "sessionUpdate" and
                  json.loads(m.payload)["sessionResults"] for m in msgs):
        chunk = resp.read1(65536)
        assert chunk, "stream ended early"
        buf.add_data(chunk)
        msgs.extend(buf)
    conn.close()
    kinds = [m.headers[":event-type"] for m in msgs]
    assert kinds[:2] == ["initial-response", "sessionStart"]
    assert set(kinds[2:]) == {"sessionUpdate"}
    for m in msgs:
        assert m.headers[":message-type"] == "event"
        assert m.headers[":content-type"] == "application/json"
    start = json.loads(msgs[1].payload)
    assert start["logGroupIdentifiers"] == [group] and start["sessionId"]
    ev = json.loads(msgs[-1].payload)["sessionResults"][0]
    assert set(ev) == {"logStreamName", "logGroupIdentifier", "message", "timestamp",
                       "ingestionTime"}
    assert ev["message"] == "hello" and ev["logStreamName"] == "s1"
    assert ev["logGroupIdentifier"] == f"arn:aws:logs:us-east-1:123456789012:log-group:{group}"


def test_only_new_events_filtered_and_other_calls_still_served(sim, tail):
    logs, group, put = tail
    put("job/algo-1", "before the session ERROR")
    r = logs.start_live_tail(logGroupIdentifiers=[group], logStreamNamePrefixes=["job/"],
                             logEventFilterPattern="ERROR -ignored")
    stream = r["responseStream"]
    first = next(iter(stream))
    assert first["sessionStart"]["logStreamNamePrefixes"] == ["job/"]
    assert first["sessionStart"]["logEventFilterPattern"] == "ERROR -ignored"
    seen, heartbeats, phase = [], 0, 0
    for upd in _updates(stream):
        assert upd["sessionMetadata"]["sampled"] is False
        seen += [e["message"] for e in upd["sessionResults"]]
        if not upd["sessionResults"]:
            heartbeats += 1
        if phase == 0:
            # the server answers other calls while this stream is open
            t0 = time.monotonic()
            logs.describe_log_groups(logGroupNamePrefix=group)
            assert time.monotonic() - t0 < 2
            put("job/algo-1", "ERROR one", "INFO two", "ERROR but ignored")
            put("other/x", "ERROR elsewhere")
            put("job/algo-2", "ERROR three")
            phase = 1
        elif len(seen) >= 2:
            break
    stream.close()
    assert sorted(seen) == ["ERROR one", "ERROR three"]
    assert heartbeats >= 1  # empty updates keep coming


def test_session_limit_ends_with_a_timeout_exception(sim, tail):
    logs, group, _put = tail
    sim.post("/_sim/livetail", {"session_seconds": 1.0})
    assert sim.get("/_sim/livetail")["config"]["session_seconds"] == 1.0
    t0 = time.monotonic()
    stream = logs.start_live_tail(logGroupIdentifiers=[group])["responseStream"]
    n = 0
    with pytest.raises(EventStreamError) as e:
        for _upd in _updates(stream):
            n += 1
    assert e.value.response["Error"]["Code"] == "SessionTimeoutException"
    assert 0.9 < time.monotonic() - t0 < 5 and n >= 3


def test_updates_over_the_limit_are_sampled(sim, tail):
    logs, group, put = tail
    sim.post("/_sim/livetail", {"max_events_per_update": 5})
    stream = logs.start_live_tail(logGroupIdentifiers=[group])["responseStream"]
    put("s", *[f"line {i}" for i in range(20)])
    upd = next(u for u in _updates(stream) if u["sessionResults"])
    stream.close()
    assert upd["sessionMetadata"]["sampled"] is True
    msgs = [e["message"] for e in upd["sessionResults"]]
    assert len(msgs) == 5 and msgs == sorted(msgs, key=lambda m: int(m.split()[1]))


def test_request_errors(sim, tail, unique):
    logs, group, _put = tail
    with pytest.raises(ClientError) as e:
        logs.start_live_tail(logGroupIdentifiers=[unique("/missing")])
    assert e.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as e:
        logs.start_live_tail(logGroupIdentifiers=[group], logStreamNames=["a"],
                             logStreamNamePrefixes=["b"])
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        logs.start_live_tail(logGroupIdentifiers=[group], logEventFilterPattern='{ $.a = 1 }')
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"
    with pytest.raises(ClientError) as e:
        logs.start_live_tail(logGroupIdentifiers=[
            f"arn:aws:logs:us-east-1:123456789012:log-group:{group}:*"])
    assert e.value.response["Error"]["Code"] == "InvalidParameterException"


# ------------------------------------------------------------------------------------ faults
def test_dropped_session_closes_without_an_exception(sim, tail):
    logs, group, _put = tail
    sim.post("/_sim/livetail-faults", {"rules": [{"kind": "drop_session", "after_updates": 2}]})
    stream = logs.start_live_tail(logGroupIdentifiers=[group])["responseStream"]
    n = 0
    with pytest.raises(Exception) as e:  # the transport breaks: no modeled exception arrives
        for _upd in _updates(stream):
            n += 1
    assert not isinstance(e.value, EventStreamError), e.value
    assert n == 2
    assert sim.get("/_sim/livetail-faults")["rules"] == []  # count 1: consumed


def _two_batches(stream, put, first, second):
    """Put `first`, then `second` once an update has shown something; collect every update's
    messages until all of `first + second` were seen at least once (and one update more)."""
    put("s", *first)
    per_update, phase = [], 0
    for upd in _updates(stream):
        msgs = [e["message"] for e in upd["sessionResults"]]
        per_update.append(msgs)
        seen = [m for u in per_update for m in u]
        if phase == 0 and msgs:
            put("s", *second)
            phase = 1
        elif phase == 1 and set(first + second) <= set(seen):
            phase = 2
        elif phase == 2:
            break
    stream.close()
    return [u for u in per_update if u]


def test_sampled_fault_omits_events(sim, tail):
    logs, group, put = tail
    sim.post("/_sim/livetail-faults", {"rules": [{"kind": "sample", "keep_every": 2}]})
    stream = logs.start_live_tail(logGroupIdentifiers=[group])["responseStream"]
    put("s", *[f"m{i}" for i in range(6)])
    upd = next(u for u in _updates(stream) if u["sessionResults"])
    stream.close()
    assert upd["sessionMetadata"]["sampled"] is True
    assert [e["message"] for e in upd["sessionResults"]] == ["m0", "m2", "m4"]


def test_duplicate_fault_repeats_an_update(sim, tail):
    logs, group, put = tail
    sim.post("/_sim/livetail-faults", {"rules": [{"kind": "duplicate"}]})
    stream = logs.start_live_tail(logGroupIdentifiers=[group])["responseStream"]
    updates = _two_batches(stream, put, ["a1", "a2"], ["b1"])
    assert updates[0] == ["a1", "a2"] and updates[1][:2] == ["a1", "a2"]  # sent again
    assert sum(updates, []).count("b1") == 1


def test_reorder_fault_delivers_an_update_after_the_next(sim, tail):
    logs, group, put = tail
    sim.post("/_sim/livetail-faults", {"rules": [{"kind": "reorder"}]})
    stream = logs.start_live_tail(logGroupIdentifiers=[group])["responseStream"]
    # the first batch is held back (empty updates meanwhile) until an update has events
    put("s", "a1", "a2")
    per_update = []
    for i, upd in enumerate(_updates(stream)):
        per_update.append([e["message"] for e in upd["sessionResults"]])
        if i == 1:
            put("s", "b1")
        if "b1" in sum(per_update, []):
            break
    stream.close()
    seen = sum(per_update, [])
    assert seen == ["b1", "a1", "a2"]  # older events after newer ones


def test_fault_rules_are_validated(sim):
    status, obj = sim._req("POST", "/_sim/livetail-faults", {"rules": [{"kind": "explode"}]})
    assert status == 400 and "kind" in obj["error"]
    status, obj = sim._req("POST", "/_sim/livetail", {"session_seconds": -1})
    assert status == 400
