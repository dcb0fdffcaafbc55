"""The demo's edge story with Arrowhead's own Python client (arrowhead-client 0.4.4a0,
unmodified) playing the third parties, beside two gwe hubs and two gwe edges (real agents)
in Arrowhead's insecure mode:

- `sink`, a third-party provider, registers a `batch` service of its own in the first
  hub's registry and stores the batches edges send it (once per batch id, as a hub does);
- `console`, a third-party consumer, orchestrates `cmd`, finds both hubs' and commands one
  edge through each: EDGE1 (through hub A) sends its temperatures to `sink`, EDGE2 (through
  hub B) its humidity to hub B and gets a generic configuration for its apps; then it reads
  each command's outcome back from the hub it came from, and sees a command the edge would
  refuse, and one for a gateway nobody knows, refused at once;
- `sink` unregisters: it is no longer offered.

Run by hub/tests/edge_story.rs, which starts the hubs and edges and an app writing points:
  python3 edge_story.py HUB_A_PORT HUB_B_PORT SINK_PORT
Prints one JSON line per step; exits non-zero on the first failure.
"""
import json
import socket
import sys
import threading
import time
import zlib

import flask
from arrowhead_client.client.implementations import SyncClient
from arrowhead_client.client import core_service_responses as responses
from arrowhead_client.client.core_service_forms import client as forms
from arrowhead_client.service import Service, ServiceInterface

hub_a, hub_b, sink_port = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
core = {'address': '127.0.0.1', 'port': hub_a}
config = {name: {'system_name': name, **core} for name in ('service_registry', 'orchestrator', 'authorization')}


def step(name, **facts):
    print(json.dumps({'step': name, **facts}), flush=True)


def wait(what, check, secs=60):
    deadline = time.time() + secs
    while True:
        try:
            got = check()
        except OSError:  # not up yet
            got = None
        if got:
            return got
        if time.time() > deadline:
            raise SystemExit(f'timed out waiting for {what}')
        time.sleep(0.3)


# The sink: stores each batch id once and answers as a hub does.
batches = {}
lock = threading.Lock()
sink = SyncClient.create(system_name='sink', address='127.0.0.1', port=sink_port, config=config, log_mode='error')


@sink.provided_service(service_definition='batch', service_uri='sink', protocol='HTTP', method='POST',
                       payload_format='JSON', access_policy='NOT_SECURE')
def store(request):
    # Edges deflate batches over 1 KiB (Content-Encoding: deflate); the client's request
    # object does not, so the raw body is read from Flask's.
    raw = flask.request.get_data()
    if flask.request.headers.get('Content-Encoding') == 'deflate':
        raw = zlib.decompress(raw)
    b = json.loads(raw)
    with lock:
        duplicate = b['batch_id'] in batches
        if not duplicate:
            batches[b['batch_id']] = (b['system'], b['points'])
    return {'batch_id': b['batch_id'], 'stored': 0 if duplicate else len(b['points']), 'duplicate': duplicate}


threading.Thread(target=sink.run_forever, daemon=True).start()
wait('the sink to serve', lambda: socket.create_connection(('127.0.0.1', sink_port), timeout=1).close() or True)
wait('the sink to register', lambda: all(r.is_provided for r in sink.registration_rules))
step('sink-registered')

# The console finds both hubs' cmd services.
console = SyncClient.create(system_name='console', address='127.0.0.1', port=sink_port + 1, config=config,
                            log_mode='error')
console.setup()
form = forms.OrchestrationForm.make(console.system, Service('cmd', interface=ServiceInterface('', '', '')))
rules = responses.process_orchestration(console.consume_service('orchestration-service', json=form.dto()), 'POST')
by_port = {r._provider_system.port: r for r in rules}
step('cmd-providers', providers=sorted([r.system_name, r._provider_system.port] for r in rules))
assert set(by_port) == {hub_a, hub_b}, by_port
assert len({r.system_name for r in rules}) == 2, 'two hubs with one name'
name_b = by_port[hub_b].system_name


def cmd(port, system, body=None, **params):
    """The cmd service of the hub at `port`, for `system`: a POST with `body`, else a GET.
    The hub's `cmd` names the gateway in its path (`edge/cmd/SYSTEM`) and answers GET and
    POST: the client has no way to add to a service's URI or to choose the method of a
    rule, so they are set on the rule the client made."""
    rule = by_port[port]
    uri = rule._consumed_service.service_uri
    rule._consumed_service.service_uri = f'{uri}/{system}'
    try:
        if body is None:
            rule._method = 'GET'
            return console.consumer.consume_service(rule, params=params)
        rule._method = 'POST'
        return console.consumer.consume_service(rule, json=body)
    finally:
        rule._consumed_service.service_uri = uri


def issue(port, system, body):
    # A hub knows an edge once it has reported its state there (or has it as a device).
    r = wait(f'{system} known at {port}', lambda: (lambda r: r if r.status_code != 404 else None)(cmd(port, system, body)))
    assert r.status_code == 201, r.payload
    return r


issue(hub_a, 'EDGE1', {'id': 'tp-e1', 'batch': {'sink': {'interval_ms': 500, 'filter': ['temp*']}}})
issue(hub_b, 'EDGE2', {'id': 'tp-e2', 'batch': {name_b: {'interval_ms': 500, 'filter': ['hum']}},
                       'config': {'mode': 'eco'}})
step('commands-issued')


def outcome(port, system, cid):
    v = cmd(port, system, last='true').read_json()
    r = v.get('lastCommandResult') or {}
    return r if v['lastCommand'].get('id') == cid and r.get('id') == cid else None


for port, system, cid in [(hub_a, 'EDGE1', 'tp-e1'), (hub_b, 'EDGE2', 'tp-e2')]:
    r = wait(f'the outcome of {cid}', lambda: outcome(port, system, cid))
    step('outcome', system=system, id=cid, result=r['result'])
    assert r['result'] == 'applied', r

# Refused at once: a command the edge would refuse (with the edge's reason), and one for a
# gateway the hub knows nothing of.
r = cmd(hub_a, 'EDGE1', {'id': 'bad', 'batch': {'sink': {'interval_ms': 5, 'filter': ['temp*']}}})
step('refused', status=r.status_code, reason=r.read_json()['errorMessage'] if r.status_code != 400 else r.payload.decode())
assert r.status_code == 400 and b'interval_ms 5' in r.payload, r.payload
r = cmd(hub_a, 'NOBODY', {'id': 'x', 'config': {}})
step('unknown', status=r.status_code)
assert r.status_code == 404, r.payload


def temperatures():
    with lock:
        got = [p for system, pts in batches.values() if system == 'EDGE1' for p in pts]
    return got if len(got) >= 10 else None


got = wait('ten temperatures from EDGE1 at the sink', temperatures)
step('sink-stored', points=len(got), names=sorted({p['n'] for p in got}), batches=len(batches))
assert all(p['n'].startswith('temp') for p in got), got

# The sink leaves: it is no longer offered to anyone.
sink._unregister_all_services()
query = forms.ServiceQueryForm.make(Service('batch', interface=ServiceInterface('', '', '')))
left = responses.process_service_query(console.consume_service('service-query', json=query.dto()))
step('sink-unregistered', providers=sorted(s.system_name for _, s in left))
assert 'sink' not in [s.system_name for _, s in left], left
step('done')
